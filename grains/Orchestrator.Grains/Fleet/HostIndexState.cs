using MessagePack;

namespace Orchestrator.Grains.Fleet;

/// <summary>One host's slice of the fleet's VM index (the <see cref="HostIndexGrain"/>'s persisted state).</summary>
[GenerateSerializer]
[Alias("orchestrator.HostIndexState")]
[MessagePackObject]
public sealed record class HostIndexState
{
    /// <summary>The host's VMs by name (present or vanished at the last sync).</summary>
    [Id(0)]
    [Key(0)]
    public Dictionary<string, VmIndexRecord> Vms { get; set; } = new(StringComparer.Ordinal);
}
