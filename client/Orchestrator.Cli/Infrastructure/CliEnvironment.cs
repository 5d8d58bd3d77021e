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

    public required Func<Uri, ChannelBase> Connect { get; init; }

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

    /// <summary>Plain http:// is HTTP/2 without TLS (h2c), which is how the silo serves gRPC on its port.</summary>
    public static ChannelBase OpenGrpcChannel(Uri endpoint) => GrpcChannel.ForAddress(endpoint, new GrpcChannelOptions
    {
        MaxReceiveMessageSize = MaxReceiveMessageBytes,
    });
}
