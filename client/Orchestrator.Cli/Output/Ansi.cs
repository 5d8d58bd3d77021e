namespace Orchestrator.Cli.Output;

/// <summary>ANSI styles, applied only when the environment says stdout is an interactive terminal.</summary>
internal static class Ansi
{
    public static string Bold(string text, bool color) => color ? $"\u001b[1m{text}\u001b[0m" : text;
}
