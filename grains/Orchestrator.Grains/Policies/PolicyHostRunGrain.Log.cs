using Microsoft.Extensions.Logging;

namespace Orchestrator.Grains.Policies;

internal sealed partial class PolicyHostRunGrain
{
    [LoggerMessage(Level = LogLevel.Information, Message = "Policy {Policy}: run {Run}: part on {Host} started ({Targets} VMs, grant {Granted})")]
    private static partial void LogPartStarted(ILogger logger, string policy, string run, string host, int targets, int granted);

    [LoggerMessage(Level = LogLevel.Information, Message = "Policy {Policy}: run {Run}: part on {Host} resumed; re-resolving its VMs")]
    private static partial void LogPartRecovering(ILogger logger, string policy, string run, string host);

    [LoggerMessage(Level = LogLevel.Information, Message = "Policy {Policy}: run {Run}: part on {Host} ended, {Succeeded} of {Targets} VMs succeeded")]
    private static partial void LogPartFinished(ILogger logger, string policy, string run, string host, int succeeded, int targets);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Policy {Policy}: run {Run}: part on {Host} cannot reach the policy grain (its next sync picks the news up): {Reason}")]
    private static partial void LogCoordinatorUnreachable(ILogger logger, string policy, string run, string host, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Policy {Policy}: run {Run}: part on {Host}: writing its state failed: {Reason}")]
    private static partial void LogCheckpointFailed(ILogger logger, string policy, string run, string host, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Policy {Policy}: run {Run}: {Vm} {Status} ({Reason})")]
    private static partial void LogTargetEnded(ILogger logger, string policy, string run, string vm, PolicyTargetStatus status, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Policy {Policy}: run {Run}: {Vm} skipped: {Reason}")]
    private static partial void LogTargetSkipped(ILogger logger, string policy, string run, string vm, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Policy {Policy}: run {Run}: adopted backup {Backup} already started on the VM (resumed: {Resumed})")]
    private static partial void LogBackupAdopted(ILogger logger, string policy, string run, string backup, bool resumed);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Policy {Policy}: {Vm} unreachable, retrying: {Reason}")]
    private static partial void LogVmUnreachable(ILogger logger, string policy, string vm, string reason);
}
