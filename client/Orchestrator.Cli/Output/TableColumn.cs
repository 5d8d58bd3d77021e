namespace Orchestrator.Cli.Output;

internal sealed record TableColumn(string Header, bool AlignRight = false);
