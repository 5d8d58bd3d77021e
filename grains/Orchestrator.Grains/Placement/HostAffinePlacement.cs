using Orleans.Placement;

namespace Orchestrator.Grains.Placement;

/// <summary>
/// Places a grain on the silo that serves the hypervisor host named by the first segment of its key
/// (<c>host</c>, <c>host/vm</c>, <c>host/vm/disk</c>). Never anywhere else: with no live silo for the host, the
/// call fails with a "host unavailable" error.
/// </summary>
[GenerateSerializer]
[Immutable]
[SuppressReferenceTracking]
[Alias("orchestrator.HostAffinePlacement")]
public sealed class HostAffinePlacement : PlacementStrategy
{
    public static readonly HostAffinePlacement Instance = new();
}

[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class HostAffinePlacementAttribute : PlacementAttribute
{
    public HostAffinePlacementAttribute()
        : base(HostAffinePlacement.Instance)
    {
    }
}
