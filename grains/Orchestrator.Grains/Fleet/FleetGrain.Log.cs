using Microsoft.Extensions.Logging;

namespace Orchestrator.Grains.Fleet;

internal sealed partial class FleetGrain
{
    [LoggerMessage(Level = LogLevel.Information, Message = "Fleet index: {Count} VM records of {Hosts} hosts handed over from the fleet grain to the hosts' index shards")]
    private static partial void LogIndexMigrated(ILogger logger, int count, int hosts);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Fleet index: {Count} VM records with an invalid host or VM name dropped while handing the index over to the hosts' shards (the next inventory sync re-adds any VM that exists)")]
    private static partial void LogIndexRecordsDropped(ILogger logger, int count);
}
