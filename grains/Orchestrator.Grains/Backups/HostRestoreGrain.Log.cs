using Microsoft.Extensions.Logging;

namespace Orchestrator.Grains.Backups;

internal sealed partial class HostRestoreGrain
{
    [LoggerMessage(Level = LogLevel.Information, Message = "Restore of {Run} on host {Host} as {NewName}: {Images} images, defined {Defined}, started {Started}, {Seconds:0.00} s")]
    private static partial void LogRestored(ILogger logger, string run, string host, string newName, int images, bool defined, bool started, double seconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Restore of {Run} on host {Host} as {NewName} failed (nothing left behind): {Reason}")]
    private static partial void LogRestoreFailed(ILogger logger, string run, string host, string newName, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Verify of {Run} on host {Host}: {Sets} sets, passed {Passed}")]
    private static partial void LogVerified(ILogger logger, string run, string host, int sets, bool passed);
}
