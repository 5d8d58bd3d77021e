using Orchestrator.Api.V1;

namespace Orchestrator.Cli.Views;

/// <summary>
/// Enum values as JSON and tables spell them: the proto name without its prefix, lowercase
/// (POWER_STATE_SHUT_OFF is "shut_off"). A value this CLI does not know yet (a newer server) is "unknown".
/// Policy kinds and compliance statuses are spelled as in policy files, with '-' ("live-backup", "out-of-rpo").
/// </summary>
internal static class EnumNames
{
    public const string Unknown = "unknown";

    public static string Of(PowerState state) => state switch
    {
        PowerState.Unspecified => "unspecified",
        PowerState.Running => "running",
        PowerState.Blocked => "blocked",
        PowerState.Paused => "paused",
        PowerState.ShuttingDown => "shutting_down",
        PowerState.ShutOff => "shut_off",
        PowerState.Crashed => "crashed",
        PowerState.PmSuspended => "pm_suspended",
        _ => Unknown,
    };

    public static string Of(TestRestoreOutcome outcome) => outcome switch
    {
        TestRestoreOutcome.Running => "running",
        TestRestoreOutcome.Passed => "passed",
        TestRestoreOutcome.Failed => "failed",
        _ => Unknown,
    };

    public static string Of(OverlayRepairAction action) => action switch
    {
        OverlayRepairAction.Committed => "committed",
        OverlayRepairAction.WouldCommit => "would_commit",
        OverlayRepairAction.Refused => "refused",
        _ => Unknown,
    };

    public static string Of(CheckpointOrigin origin) => origin switch
    {
        CheckpointOrigin.Unspecified => "unspecified",
        CheckpointOrigin.External => "external",
        CheckpointOrigin.Manual => "manual",
        CheckpointOrigin.Schedule => "schedule",
        CheckpointOrigin.Policy => "policy",
        _ => Unknown,
    };

    public static string Of(PauseSource source) => source switch
    {
        PauseSource.Unspecified => "unspecified",
        PauseSource.None => "none",
        PauseSource.Events => "events",
        PauseSource.CallDuration => "call_duration",
        PauseSource.Unknown => "unknown",
        _ => Unknown,
    };

    public static string Of(BackupStep step) => step switch
    {
        BackupStep.Unspecified => "unspecified",
        BackupStep.Admitted => "admitted",
        BackupStep.Preflight => "preflight",
        BackupStep.Quiesce => "quiesce",
        BackupStep.OverlayActive => "overlay_active",
        BackupStep.Copying => "copying",
        BackupStep.Committing => "committing",
        BackupStep.Cleaning => "cleaning",
        BackupStep.Verifying => "verifying",
        BackupStep.Completed => "completed",
        BackupStep.Failed => "failed",
        BackupStep.Queued => "queued",
        _ => Unknown,
    };

    public static string Of(PolicyKind kind) => kind switch
    {
        PolicyKind.Unspecified => "unspecified",
        PolicyKind.LiveBackup => "live-backup",
        PolicyKind.Checkpoint => "checkpoint",
        _ => Unknown,
    };

    /// <summary>Unspecified is off, as the proto says.</summary>
    public static string Of(QuiesceMode mode) => mode switch
    {
        QuiesceMode.Unspecified or QuiesceMode.Off => "off",
        QuiesceMode.Try => "try",
        QuiesceMode.Required => "required",
        _ => Unknown,
    };

    public static string Of(PolicyRunTrigger trigger) => trigger switch
    {
        PolicyRunTrigger.Unspecified => "unspecified",
        PolicyRunTrigger.Manual => "manual",
        PolicyRunTrigger.Schedule => "schedule",
        PolicyRunTrigger.Retry => "retry",
        _ => Unknown,
    };

    public static string Of(PolicyRunState state) => state switch
    {
        PolicyRunState.Unspecified => "unspecified",
        PolicyRunState.Running => "running",
        PolicyRunState.Completed => "completed",
        PolicyRunState.Partial => "partial",
        PolicyRunState.Failed => "failed",
        _ => Unknown,
    };

    public static string Of(PolicyTargetStatus status) => status switch
    {
        PolicyTargetStatus.Unspecified => "unspecified",
        PolicyTargetStatus.Pending => "pending",
        PolicyTargetStatus.Running => "running",
        PolicyTargetStatus.Succeeded => "succeeded",
        PolicyTargetStatus.Failed => "failed",
        PolicyTargetStatus.Skipped => "skipped",
        _ => Unknown,
    };

    public static string Of(ComplianceStatus status) => status switch
    {
        ComplianceStatus.Unspecified => "unspecified",
        ComplianceStatus.Ok => "ok",
        ComplianceStatus.OutOfRpo => "out-of-rpo",
        ComplianceStatus.Never => "never",
        ComplianceStatus.Unprotected => "unprotected",
        _ => Unknown,
    };
}
