namespace Orchestrator.Grains.Fleet;

/// <summary>
/// Fleet-wide compliance assembled straight from the hosts' index shards, for callers outside the fleet grain (the
/// gRPC service): the fleet grain gives the small registries (hosts, policies), the shards the rows, so 10,000 rows
/// cross the wire once instead of twice (shard to fleet grain, fleet grain to caller). Same answer, same order as
/// <see cref="IFleetGrain.GetComplianceAsync"/>.
/// </summary>
public static class FleetIndexQueries
{
    /// <summary>Compliance of every indexed VM, or of one host's (<paramref name="host"/> non-empty), ordered by host then name.</summary>
    public static async Task<IReadOnlyList<VmCompliance>> ComplianceAsync(IGrainFactory grains, string host, DateTimeOffset at, int fanOut, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(grains);
        var fleet = grains.GetGrain<IFleetGrain>(GrainKeys.Fleet);
        var hosts = (await fleet.ListIndexHostsAsync(cancellationToken)).Where(h => host.Length == 0 || h == host).ToList();
        var policies = await fleet.ListPoliciesAsync(cancellationToken);
        var answers = await BoundedFanOut.RunAsync(hosts, fanOut, h => grains.GetGrain<IHostIndexGrain>(h).GetComplianceAsync(policies, at, withRows: true, cancellationToken));
        return [.. answers.SelectMany(a => a.Vms)];
    }
}
