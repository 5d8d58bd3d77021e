namespace Orchestrator.Cli.Errors;

/// <summary>
/// What the user is told when a command fails: one <c>error: message</c> line on stderr, then each detail
/// on its own indented line, and the process exits with <see cref="ExitCode"/>.
/// </summary>
internal sealed record CliError(int ExitCode, string Message, IReadOnlyList<string> Details)
{
    public CliError(int exitCode, string message)
        : this(exitCode, message, [])
    {
    }

    public void WriteTo(TextWriter stderr)
    {
        stderr.WriteLine($"error: {Message}");
        foreach (string detail in Details)
        {
            stderr.WriteLine($"  {detail}");
        }
    }
}
