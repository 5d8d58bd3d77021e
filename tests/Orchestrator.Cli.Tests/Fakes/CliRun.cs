using Orchestrator.Cli.Infrastructure;

namespace Orchestrator.Cli.Tests.Fakes;

/// <summary>The outcome of one in-process run of the CLI.</summary>
internal sealed record CliRun(int ExitCode, string Stdout, string Stderr, IReadOnlyList<GrpcConnection> GrpcConnections)
{
    /// <summary>The endpoint of each channel opened.</summary>
    public IReadOnlyList<Uri> Connections => GrpcConnections.Select(c => c.Endpoint).ToList();

    /// <summary>Runs the CLI against <paramref name="invoker"/> with the given environment variables.</summary>
    public static Task<CliRun> RunAsync(
        FakeCallInvoker invoker, IReadOnlyDictionary<string, string>? variables, params string[] args) =>
        RunAsync(invoker, variables, CancellationToken.None, args);

    public static Task<CliRun> RunAsync(
        FakeCallInvoker invoker, IReadOnlyDictionary<string, string>? variables, CancellationToken cancellationToken, params string[] args) =>
        RunAsync(invoker, variables, configure: null, cancellationToken, args);

    /// <summary>Runs the CLI with an environment changed by <paramref name="configure"/> (a terminal, a clock...).</summary>
    public static Task<CliRun> RunWithAsync(FakeCallInvoker invoker, Func<CliEnvironment, CliEnvironment> configure, params string[] args) =>
        RunAsync(invoker, null, configure, CancellationToken.None, args);

    private static async Task<CliRun> RunAsync(
        FakeCallInvoker invoker,
        IReadOnlyDictionary<string, string>? variables,
        Func<CliEnvironment, CliEnvironment>? configure,
        CancellationToken cancellationToken,
        string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var connections = new List<GrpcConnection>();
        var environment = new CliEnvironment
        {
            Connect = connection =>
            {
                connections.Add(connection);
                return new FakeChannel(invoker, connection.Endpoint);
            },
            GetVariable = name => variables is not null && variables.TryGetValue(name, out string? value) ? value : null,
        };
        if (configure is not null)
        {
            environment = configure(environment);
        }

        int exitCode = await CliApp.RunAsync(args, stdout, stderr, environment, cancellationToken);
        return new CliRun(exitCode, stdout.ToString(), stderr.ToString(), connections);
    }

    public static Task<CliRun> RunAsync(FakeCallInvoker invoker, params string[] args) => RunAsync(invoker, null, args);
}
