using Microsoft.Extensions.Logging;

namespace Orchestrator.Grains.VirtualMachines;

internal sealed partial class VirtualMachineGrain
{
    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: uuid changed from {Old} to {New} (redefined under the same name)")]
    private static partial void LogUuidChanged(ILogger logger, string key, Guid old, Guid @new);

    [LoggerMessage(Level = LogLevel.Information, Message = "VM {Key}: no longer found on its host")]
    private static partial void LogVanished(ILogger logger, string key);

    [LoggerMessage(Level = LogLevel.Information, Message = "VM {Key}: resuming backup {Run} at step {Step}")]
    private static partial void LogBackupResumed(ILogger logger, string key, string run, BackupStep step);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: backup {Run} step {Step} failed: {Reason}")]
    private static partial void LogBackupStepFailed(ILogger logger, string key, string run, BackupStep step, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "VM {Key}: backup {Run} finished {Outcome} {Error}")]
    private static partial void LogBackupFinished(ILogger logger, string key, string run, BackupStep outcome, string? error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: thaw failed: {Reason}")]
    private static partial void LogThawFailed(ILogger logger, string key, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: pivot of {Disk} failed (attempt {Attempt}), retrying: {Reason}")]
    private static partial void LogPivotRetry(ILogger logger, string key, string disk, int attempt, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: {Disk} committed offline (the VM was shut off with the overlay active)")]
    private static partial void LogCommittedOffline(ILogger logger, string key, string disk);

    [LoggerMessage(Level = LogLevel.Information, Message = "VM {Key}: backup {Run} pruned by retention")]
    private static partial void LogPruned(ILogger logger, string key, string run);

    [LoggerMessage(Level = LogLevel.Critical, Message = "Crash test: killing this silo at {Point}")]
    private static partial void LogKilling(ILogger logger, string point);
}
