using Microsoft.Extensions.Logging;

namespace Orchestrator.Grains.Policies;

internal sealed partial class BackupPolicyGrain
{
    [LoggerMessage(Level = LogLevel.Information, Message = "Policy {Policy}: version {Version} applied (created: {Created})")]
    private static partial void LogApplied(ILogger logger, string policy, int version, bool created);

    [LoggerMessage(Level = LogLevel.Information, Message = "Policy {Policy}: deleted")]
    private static partial void LogDeleted(ILogger logger, string policy);

    [LoggerMessage(Level = LogLevel.Information, Message = "Policy {Policy}: run {Run} started ({Trigger}, {Targets} VMs)")]
    private static partial void LogRunStarted(ILogger logger, string policy, string run, PolicyRunTrigger trigger, int targets);

    [LoggerMessage(Level = LogLevel.Information, Message = "Policy {Policy}: run {Run} resumed")]
    private static partial void LogRunResumed(ILogger logger, string policy, string run);

    [LoggerMessage(Level = LogLevel.Information, Message = "Policy {Policy}: run {Run} ended {State}, {Succeeded} of {Targets} VMs succeeded")]
    private static partial void LogRunFinished(ILogger logger, string policy, string run, PolicyRunState state, int succeeded, int targets);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Policy {Policy}: run {Run} stopped ({Reason}); the next tick resumes it")]
    private static partial void LogRunLoopFailed(ILogger logger, string policy, string run, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Policy {Policy}: run {Run}: {Vm} {Status} ({Reason})")]
    private static partial void LogTargetEnded(ILogger logger, string policy, string run, string vm, PolicyTargetStatus status, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Policy {Policy}: run {Run}: {Vm} skipped: {Reason}")]
    private static partial void LogTargetSkipped(ILogger logger, string policy, string run, string vm, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Policy {Policy}: run {Run}: adopted backup {Backup} already started on the VM (resumed: {Resumed})")]
    private static partial void LogBackupAdopted(ILogger logger, string policy, string run, string backup, bool resumed);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Policy {Policy}: {Vm} unreachable, retrying: {Reason}")]
    private static partial void LogVmUnreachable(ILogger logger, string policy, string vm, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Policy {Policy}: run {Run}: releasing the slot of {Vm} failed: {Reason}")]
    private static partial void LogReleaseFailed(ILogger logger, string policy, string run, string vm, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Policy {Policy}: tick failed: {Reason}")]
    private static partial void LogTickFailed(ILogger logger, string policy, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Policy {Policy}: reminder registration failed: {Reason}")]
    private static partial void LogReminderFailed(ILogger logger, string policy, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Policy {Policy}: run {Run}: admission failed, trying again: {Reason}")]
    private static partial void LogAdmissionFailed(ILogger logger, string policy, string run, string reason);
}
