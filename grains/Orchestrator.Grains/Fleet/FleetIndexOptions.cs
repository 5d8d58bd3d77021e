namespace Orchestrator.Grains.Fleet;

/// <summary>How the fleet's VM index is kept and queried (section Orchestrator:FleetIndex).</summary>
public sealed class FleetIndexOptions
{
    /// <summary>
    /// A host shard stores new backup/checkpoint times once no new one arrived for this long (a burst of a policy
    /// run is one write, not one per VM).
    /// </summary>
    public TimeSpan ProtectionFlushQuietDelay { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>... and at the latest this long after the first unsaved time, however steady the stream.</summary>
    public TimeSpan ProtectionFlushMaxDelay { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How many host shards a fleet-wide query (selection, VM list, compliance) calls at once.</summary>
    public int QueryFanOut { get; set; } = 32;

    /// <summary>How many VM grains a host's inventory sync (and its VM list) calls at once.</summary>
    public int InventoryFanOut { get; set; } = 32;
}
