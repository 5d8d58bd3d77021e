using Orchestrator.Cli.Errors;

namespace Orchestrator.Cli.Output;

internal enum OutputFormat
{
    Table,
    Json,
}

internal static class OutputFormats
{
    public static string[] Names { get; } = ["table", "json"];

    public static OutputFormat Parse(string name) => name switch
    {
        "table" => OutputFormat.Table,
        "json" => OutputFormat.Json,
        _ => throw CliException.Usage($"--format: '{name}' is not one of {string.Join(", ", Names)}"),
    };
}
