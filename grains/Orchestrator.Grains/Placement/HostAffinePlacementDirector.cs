using Orleans.Runtime.Placement;

namespace Orchestrator.Grains.Placement;

internal sealed class HostAffinePlacementDirector(IHostDirectory directory) : IPlacementDirector
{
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        var host = GrainKeys.HostOf(target.GrainIdentity.Key.ToString() ?? "");
        var silo = directory.FindSilo(host, context.GetCompatibleSilos(target));
        return silo is not null
            ? Task.FromResult(silo)
            : Task.FromException<SiloAddress>(OrchestratorException.HostUnavailable(host));
    }
}
