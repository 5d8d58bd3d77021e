using Orchestrator.Cli.Infrastructure;

namespace Orchestrator.Cli.Tests.Fakes;

/// <summary>The outcome of one in-process run of the CLI.</summary>
internal sealed record CliRun(int ExitCode, string Stdout, string Stderr, IReadOnlyList<Uri> Connections)
{
    /// <summary>Runs the CLI against <paramref name="invoker"/> with the given environment variables.</summary>
    public static Task<CliRun> RunAsync(
        FakeCallInvoker invoker, IReadOnlyDictionary<string, string>? variables, params string[] args) =>
        RunAsync(invoker, variables, CancellationToken.None, args);

    public static async Task<CliRun> RunAsync(
        FakeCallInvoker invoker, IReadOnlyDictionary<string, string>? variables, CancellationToken cancellationToken, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var connections = new List<Uri>();
        var environment = new CliEnvironment
        {
            Connect = endpoint =>
            {
                connections.Add(endpoint);
                return new FakeChannel(invoker, endpoint);
            },
            GetVariable = name => variables is not null && variables.TryGetValue(name, out string? value) ? value : null,
        };
        int exitCode = await CliApp.RunAsync(args, stdout, stderr, environment, cancellationToken);
        return new CliRun(exitCode, stdout.ToString(), stderr.ToString(), connections);
    }

    public static Task<CliRun> RunAsync(FakeCallInvoker invoker, params string[] args) => RunAsync(invoker, null, args);
}
