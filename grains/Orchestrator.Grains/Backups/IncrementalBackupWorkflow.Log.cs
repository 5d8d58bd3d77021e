using Microsoft.Extensions.Logging;

namespace Orchestrator.Grains.Backups;

internal sealed partial class IncrementalBackupWorkflow
{
    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: backup {Run} step {Step} failed (attempt {Attempt}): {Reason}")]
    private static partial void LogStepFailed(ILogger logger, string key, string run, string step, int attempt, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: backup {Run}: {Reason}")]
    private static partial void LogFellBackToFull(ILogger logger, string key, string run, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: backup {Run}: could not {What}: {Reason}")]
    private static partial void LogDropFailed(ILogger logger, string key, string run, string what, string reason);
}
