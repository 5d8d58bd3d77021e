using Orchestrator.Api.V1;

namespace Orchestrator.Cli.Views;

/// <summary>
/// Enum values as JSON and tables spell them: the proto name without its prefix, lowercase
/// (POWER_STATE_SHUT_OFF is "shut_off"). A value this CLI does not know yet (a newer server) is "unknown".
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

    public static string Of(CheckpointOrigin origin) => origin switch
    {
        CheckpointOrigin.Unspecified => "unspecified",
        CheckpointOrigin.External => "external",
        CheckpointOrigin.Manual => "manual",
        CheckpointOrigin.Schedule => "schedule",
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
        _ => Unknown,
    };
}
