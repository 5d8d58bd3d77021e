using Microsoft.Extensions.Logging;

namespace Orchestrator.Grains.Hosts;

internal sealed partial class HostGrain
{
    [LoggerMessage(Level = LogLevel.Debug, Message = "Host {Host}: inventory synced, {Count} domains, {Vanished} vanished")]
    private static partial void LogSynced(ILogger logger, string host, int count, int vanished);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Host {Host}: inventory sync failed: {Reason}")]
    private static partial void LogSyncFailed(ILogger logger, string host, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Host {Host}: VM '{Vm}' skipped by the inventory sync (the other VMs are synced): {Reason}")]
    private static partial void LogVmSkipped(ILogger logger, string host, string vm, string reason);
}
