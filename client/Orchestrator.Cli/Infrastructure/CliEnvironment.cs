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

    /// <summary>The real environment, with colors only when <paramref name="stdout"/> is an interactive console.</summary>
    public static CliEnvironment ForProcess(TextWriter stdout) => new()
    {
        Connect = OpenGrpcChannel,
        GetVariable = Environment.GetEnvironmentVariable,
        Color = ReferenceEquals(stdout, Console.Out)
            && !Console.IsOutputRedirected
            && string.IsNullOrEmpty(Environment.GetEnvironmentVariable("NO_COLOR"))
            && Environment.GetEnvironmentVariable("TERM") != "dumb",
    };

    /// <summary>Plain http:// is HTTP/2 without TLS (h2c), which is how the silo serves gRPC on its port.</summary>
    public static ChannelBase OpenGrpcChannel(Uri endpoint) => GrpcChannel.ForAddress(endpoint, new GrpcChannelOptions
    {
        MaxReceiveMessageSize = MaxReceiveMessageBytes,
    });
}
