namespace Orchestrator.Cli.Errors;

/// <summary>An error found by the CLI itself, with the exit code it ends the process with.</summary>
internal sealed class CliException(int exitCode, string message, IReadOnlyList<string>? details = null)
    : Exception(message)
{
    public int ExitCode { get; } = exitCode;

    public IReadOnlyList<string> Details { get; } = details ?? [];

    public static CliException Usage(string message) => new(ExitCodes.Usage, message);

    public CliError ToCliError() => new(ExitCode, Message, Details);
}
