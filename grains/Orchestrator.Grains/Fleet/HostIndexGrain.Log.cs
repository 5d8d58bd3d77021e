using Microsoft.Extensions.Logging;

namespace Orchestrator.Grains.Fleet;

internal sealed partial class HostIndexGrain
{
    [LoggerMessage(Level = LogLevel.Warning, Message = "Host index {Host}: storing protection times failed (retried; the VMs and the next inventory sync still hold them): {Reason}")]
    private static partial void LogFlushFailed(ILogger logger, string host, string reason);
}
