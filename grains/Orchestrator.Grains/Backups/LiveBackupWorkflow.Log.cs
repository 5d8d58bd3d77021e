using Microsoft.Extensions.Logging;

namespace Orchestrator.Grains.Backups;

internal sealed partial class LiveBackupWorkflow
{
    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: backup {Run} step {Step} failed (attempt {Attempt}): {Reason}")]
    private static partial void LogBackupStepFailed(ILogger logger, string key, string run, string step, int attempt, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: thaw failed: {Reason}")]
    private static partial void LogThawFailed(ILogger logger, string key, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "VM {Key}: backup {Run} gave up at {Step} after {Attempts} tries; {Where}")]
    private static partial void LogBackupGaveUp(ILogger logger, string key, string run, BackupStep step, int attempts, string where);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: backup {Run}: aborting the block job of {Disk} failed: {Reason}")]
    private static partial void LogGiveUpAbortFailed(ILogger logger, string key, string run, string disk, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: the overlays took longer than the freeze budget ({BudgetMs} ms); the guest was thawed while they finish")]
    private static partial void LogFreezeBudgetExceeded(ILogger logger, string key, double budgetMs);
}
