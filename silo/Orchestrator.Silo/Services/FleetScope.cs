using Orchestrator.Grains.Placement;

namespace Orchestrator.Silo.Services;

/// <summary>
/// The hosts a fleet-wide request covers: one named host, or every host the fleet registry knows or a live silo
/// serves. A named host that is down fails with "host unavailable"; in a fleet-wide request it is listed as
/// unavailable and the others are still answered.
/// </summary>
internal sealed record FleetScope(IReadOnlyList<string> Available, IReadOnlyList<string> Unavailable)
{
    public static async Task<FleetScope> ResolveAsync(IGrainFactory grains, IHostDirectory directory, string host, CancellationToken cancellationToken)
    {
        IEnumerable<string> hosts;
        if (host.Length > 0)
        {
            GrainKeys.ValidateHost(host);
            if (directory.FindSilo(host) is null)
            {
                throw OrchestratorException.HostUnavailable(host);
            }

            hosts = [host];
        }
        else
        {
            var registered = await grains.GetGrain<IFleetGrain>(GrainKeys.Fleet).ListHostsAsync(cancellationToken);
            hosts = registered.Select(r => r.Name).Union(directory.ServedHosts().Keys).Order(StringComparer.Ordinal);
        }

        var available = new List<string>();
        var unavailable = new List<string>();
        foreach (var name in hosts)
        {
            (directory.FindSilo(name) is null ? unavailable : available).Add(name);
        }

        return new FleetScope(available, unavailable);
    }

    /// <summary>The VMs of every available host, each host's sorted by name.</summary>
    public async Task<IReadOnlyList<VmView>> VmsAsync(IGrainFactory grains, CancellationToken cancellationToken)
    {
        var result = new List<VmView>();
        foreach (var host in Available)
        {
            var vms = await grains.GetGrain<IHostGrain>(host).ListVmsAsync(cancellationToken);
            result.AddRange(vms.OrderBy(v => v.Name, StringComparer.Ordinal));
        }

        return result;
    }
}
