using Microsoft.Extensions.Logging;

namespace Orchestrator.Grains.VirtualMachines;

internal sealed partial class VirtualMachineGrain
{
    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: uuid changed from {Old} to {New} (redefined under the same name)")]
    private static partial void LogUuidChanged(ILogger logger, string key, Guid old, Guid @new);

    [LoggerMessage(Level = LogLevel.Information, Message = "VM {Key}: no longer found on its host")]
    private static partial void LogVanished(ILogger logger, string key);

    [LoggerMessage(Level = LogLevel.Information, Message = "VM {Key}: checkpoint {Name} created (memory: {WithMemory}, pause {PauseMs:F0} ms from {PauseSource}, {TotalMs:F0} ms in all)")]
    private static partial void LogCheckpointCreated(ILogger logger, string key, string name, bool withMemory, double pauseMs, PauseSource pauseSource, double totalMs);

    [LoggerMessage(Level = LogLevel.Information, Message = "VM {Key}: reverted to checkpoint {Name}, now {State} ({DurationMs:F0} ms)")]
    private static partial void LogCheckpointReverted(ILogger logger, string key, string name, Hypervisor.DomainPowerState state, double durationMs);

    [LoggerMessage(Level = LogLevel.Information, Message = "VM {Key}: checkpoint {Name} deleted ({Operation}, {DurationMs:F0} ms)")]
    private static partial void LogCheckpointDeleted(ILogger logger, string key, string name, string operation, double durationMs);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: checkpoint {Operation} of {Name} failed ({Reason}): {Message}")]
    private static partial void LogCheckpointFailed(ILogger logger, string key, string operation, string name, string reason, string message);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: checkpoint sizes could not be read: {Reason}")]
    private static partial void LogSizesUnreadable(ILogger logger, string key, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "VM {Key}: checkpoint schedule '{Cron}' ({TimeZone}) set; next due {NextDue:O}")]
    private static partial void LogScheduleSet(ILogger logger, string key, string cron, string timeZone, DateTimeOffset nextDue);

    [LoggerMessage(Level = LogLevel.Information, Message = "VM {Key}: checkpoint schedule removed")]
    private static partial void LogScheduleDeleted(ILogger logger, string key);

    [LoggerMessage(Level = LogLevel.Information, Message = "VM {Key}: checkpoint due at {Due:O} was missed while the grain was inactive; running it once now")]
    private static partial void LogScheduleCatchUp(ILogger logger, string key, DateTimeOffset due);

    [LoggerMessage(Level = LogLevel.Information, Message = "VM {Key}: scheduled checkpoint {Name} for {Due:O} ({Skipped} more due times passed without a run), pruned {Pruned}, next due {NextDue:O}: {Outcome}")]
    private static partial void LogScheduleRan(ILogger logger, string key, string name, DateTimeOffset due, int skipped, int pruned, DateTimeOffset nextDue, string outcome);

    [LoggerMessage(Level = LogLevel.Error, Message = "VM {Key}: the stored checkpoint schedule is no longer valid and does not run: {Reason}")]
    private static partial void LogScheduleInvalid(ILogger logger, string key, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: the checkpoint schedule reminder could not be registered (the grain timer still runs it while active): {Reason}")]
    private static partial void LogReminderFailed(ILogger logger, string key, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: {Kind} '{Id}' (started {StartedAt:O}) was cut short by a restart; its lock is released")]
    private static partial void LogOperationRecovered(ILogger logger, string key, string kind, string id, DateTimeOffset startedAt);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: could not check what {Kind} '{Id}' left behind: {Reason}")]
    private static partial void LogRecoveryCheckFailed(ILogger logger, string key, string kind, string id, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "VM {Key}: resuming checkpoints on activation failed: {Reason}")]
    private static partial void LogActivationFailed(ILogger logger, string key, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "VM {Key}: resuming backup {Run} at step {Step}")]
    private static partial void LogBackupResumed(ILogger logger, string key, string run, BackupStep step);

    [LoggerMessage(Level = LogLevel.Information, Message = "VM {Key}: backup {Run} finished {Outcome} {Error}")]
    private static partial void LogBackupFinished(ILogger logger, string key, string run, BackupStep outcome, string? error);

    [LoggerMessage(Level = LogLevel.Information, Message = "VM {Key}: backup {Run} pruned by retention")]
    private static partial void LogPruned(ILogger logger, string key, string run);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: backup {Run} has a retention of all zeros; nothing pruned")]
    private static partial void LogRetentionIgnored(ILogger logger, string key, string run);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: telling the fleet about a new backup or checkpoint failed (the next inventory sync does): {Reason}")]
    private static partial void LogProtectionReportFailed(ILogger logger, string key, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: pruning checkpoints of policy {Policy} failed (the next run tries again): {Reason}")]
    private static partial void LogPolicyPruneFailed(ILogger logger, string key, string policy, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: released the {Kind} lock of {Id} (taken {StartedAt:u}): its run was never persisted (the process stopped during preflight)")]
    private static partial void LogOrphanedLockReleased(ILogger logger, string key, string kind, string id, DateTimeOffset startedAt);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: deactivating for {Reason} ({Description})")]
    private static partial void LogUnexpectedDeactivation(ILogger logger, string key, DeactivationReasonCode reason, string description);

    [LoggerMessage(Level = LogLevel.Information, Message = "VM {Key}: {Count} finished backup runs moved from the VM state to its own history (domain XML left to the manifests)")]
    private static partial void LogHistoryMigrated(ILogger logger, string key, int count);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: backup {Run} had ended ({Step}) and was recorded in the history before the process stopped; its end is now recorded in the VM state too")]
    private static partial void LogEndedRunSettled(ILogger logger, string key, string run, BackupStep step);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: repair committed the overlay {Overlay} of {Disk} left by a backup that gave up back into {Base} and deleted it")]
    private static partial void LogOverlayRepaired(ILogger logger, string key, string disk, string overlay, string @base);

    [LoggerMessage(Level = LogLevel.Information, Message = "VM {Key}: test restore {Test} of run {Run} ended {Outcome} (boot {BootSeconds:0.0} s): {Reason}")]
    private static partial void LogTestRestoreEnded(ILogger logger, string key, string test, string run, TestRestoreOutcome outcome, double bootSeconds, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: test restore {Test} was cut short by a stopped silo; its throwaway VM {Domain} and files are removed now")]
    private static partial void LogTestRestoreInterrupted(ILogger logger, string key, string test, string domain);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: clean-up of test restore {Test} failed (retried with the next reconcile): {Error}")]
    private static partial void LogTestCleanupFailed(ILogger logger, string key, string test, string error);
}
