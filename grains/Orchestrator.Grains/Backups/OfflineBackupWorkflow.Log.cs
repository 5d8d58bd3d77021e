using Microsoft.Extensions.Logging;
using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.Backups;

internal sealed partial class OfflineBackupWorkflow
{
    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: backup {Run} step {Step} failed (attempt {Attempt}): {Reason}")]
    private static partial void LogStepFailed(ILogger logger, string key, string run, string step, int attempt, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: backup {Run}: {Reason}; the offline copy is discarded")]
    private static partial void LogCopyDisturbed(ILogger logger, string key, string run, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "VM {Key}: backup {Run} goes on live: the VM is {State} now")]
    private static partial void LogHandedOverToLive(ILogger logger, string key, string run, DomainPowerState state);
}
