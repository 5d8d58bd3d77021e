using Microsoft.Extensions.Logging;

namespace Orchestrator.Grains.VirtualMachines;

internal sealed partial class VirtualMachineGrain
{
    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: uuid changed from {Old} to {New} (redefined under the same name)")]
    private static partial void LogUuidChanged(ILogger logger, string key, Guid old, Guid @new);

    [LoggerMessage(Level = LogLevel.Information, Message = "VM {Key}: no longer found on its host")]
    private static partial void LogVanished(ILogger logger, string key);
}
