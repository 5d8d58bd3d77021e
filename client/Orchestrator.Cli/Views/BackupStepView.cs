using Orchestrator.Api.V1;

namespace Orchestrator.Cli.Views;

/// <summary>One step a backup run went through, inside <see cref="BackupRunView"/>.</summary>
internal sealed record BackupStepView(string Step, DateTime? At, string? Note)
{
    public static BackupStepView From(BackupStepRecord record) =>
        new(EnumNames.Of(record.Step), Timestamps.ToUtc(record.At), record.Note.Length == 0 ? null : record.Note);
}
