using System.Security.Cryptography.X509Certificates;
using Grpc.Core;
using Grpc.Net.Client;

namespace Orchestrator.Cli.Infrastructure;

/// <summary>
/// What the CLI takes from the world outside its arguments: how to open a channel, environment
/// variables, and whether stdout is a terminal that wants colors. Tests replace it with fakes.
/// </summary>
internal sealed record CliEnvironment
{
    /// <summary>Largest response accepted (a fleet listing can be big).</summary>
    private const int MaxReceiveMessageBytes = 64 * 1024 * 1024;

    public required Func<GrpcConnection, ChannelBase> Connect { get; init; }

    public required Func<string, string?> GetVariable { get; init; }

    /// <summary>True when table output may use ANSI styles.</summary>
    public bool Color { get; init; }

    /// <summary>True when stdout is an interactive terminal, where live views may redraw in place.</summary>
    public bool Interactive { get; init; }

    /// <summary>Columns of the terminal stdout is, or null when it is none or its width is not known.</summary>
    public Func<int?> TerminalWidth { get; init; } = () => null;

    /// <summary>Standard input (<c>policy apply -f -</c>).</summary>
    public Func<TextReader> Stdin { get; init; } = () => Console.In;

    /// <summary>The clock for elapsed times and live-view ticks.</summary>
    public TimeProvider Clock { get; init; } = TimeProvider.System;

    /// <summary>
    /// The real environment: live views only when <paramref name="stdout"/> is an interactive console (not
    /// TERM=dumb), and colors only then and without NO_COLOR.
    /// </summary>
    public static CliEnvironment ForProcess(TextWriter stdout)
    {
        bool terminal = ReferenceEquals(stdout, Console.Out)
            && !Console.IsOutputRedirected
            && Environment.GetEnvironmentVariable("TERM") != "dumb";
        return new CliEnvironment
        {
            Connect = OpenGrpcChannel,
            GetVariable = Environment.GetEnvironmentVariable,
            Color = terminal && string.IsNullOrEmpty(Environment.GetEnvironmentVariable("NO_COLOR")),
            Interactive = terminal,
            TerminalWidth = terminal ? ConsoleWidth : () => null,
        };
    }

    private static int? ConsoleWidth()
    {
        try
        {
            return Console.WindowWidth > 0 ? Console.WindowWidth : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>
    /// Plain http:// is HTTP/2 without TLS (h2c), the silo's default; https:// is TLS, checked against the system's
    /// CAs or only <see cref="GrpcConnection.TrustedCa"/>, with the client certificate when one is given.
    /// </summary>
    public static ChannelBase OpenGrpcChannel(GrpcConnection connection)
    {
        var handler = new SocketsHttpHandler
        {
            EnableMultipleHttp2Connections = true,
            PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
        };
        if (connection.TrustedCa is { } ca)
        {
            handler.SslOptions.CertificateChainPolicy = new X509ChainPolicy
            {
                TrustMode = X509ChainTrustMode.CustomRootTrust,
                RevocationMode = X509RevocationMode.NoCheck,
            };
            handler.SslOptions.CertificateChainPolicy.CustomTrustStore.AddRange(ca);
        }

        if (connection.ClientCertificate is { } certificate)
        {
            handler.SslOptions.ClientCertificates = [certificate];
            // Offer it whatever issuers the server names (a private CA is rarely among them).
            handler.SslOptions.LocalCertificateSelectionCallback = (_, _, _, _, _) => certificate;
        }

        return GrpcChannel.ForAddress(connection.Endpoint, new GrpcChannelOptions
        {
            HttpHandler = handler,
            DisposeHttpClient = true,
            MaxReceiveMessageSize = MaxReceiveMessageBytes,
        });
    }
}
