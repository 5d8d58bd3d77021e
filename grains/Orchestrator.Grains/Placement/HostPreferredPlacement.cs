using Orleans.Placement;

namespace Orchestrator.Grains.Placement;

/// <summary>
/// Places a grain that holds a host's slice of fleet data (its VM index, its part of a policy run) on the silo that
/// serves the host named by the first segment of its key, and, while no live silo serves that host, on the silo that
/// calls it: the data stays readable (policy selection, compliance, skipped targets) when the host is down. The grain
/// never needs the hypervisor itself; it reaches VMs through their host-affine grains.
/// </summary>
[GenerateSerializer]
[Immutable]
[SuppressReferenceTracking]
[Alias("orchestrator.HostPreferredPlacement")]
public sealed class HostPreferredPlacement : PlacementStrategy
{
    public static readonly HostPreferredPlacement Instance = new();
}

[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class HostPreferredPlacementAttribute : PlacementAttribute
{
    public HostPreferredPlacementAttribute()
        : base(HostPreferredPlacement.Instance)
    {
    }
}
