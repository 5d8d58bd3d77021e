using Orleans.Runtime.Placement;

namespace Orchestrator.Grains.Placement;

internal sealed class HostPreferredPlacementDirector(IHostDirectory directory) : IPlacementDirector
{
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        var compatible = context.GetCompatibleSilos(target);
        var host = GrainKeys.HostOf(target.GrainIdentity.Key.ToString() ?? "");
        if (directory.FindSilo(host, compatible) is { } served)
        {
            return Task.FromResult(served);
        }

        // The host has no live silo: keep its data reachable on the calling silo (or any compatible one).
        var local = context.LocalSilo;
        return Task.FromResult(compatible.Contains(local) ? local : compatible[Random.Shared.Next(compatible.Length)]);
    }
}
