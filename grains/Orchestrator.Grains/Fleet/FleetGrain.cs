using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orchestrator.Grains.Policies;
using Orleans.Configuration;

namespace Orchestrator.Grains.Fleet;

internal sealed partial class FleetGrain(
    [PersistentState("fleet", StorageNames.Default)] IPersistentState<FleetState> state,
    TimeProvider time,
    IOptions<PolicyOptions> policyOptions,
    IOptions<FleetIndexOptions> indexOptions,
    IOptions<ClusterOptions> clusterOptions,
    ILogger<FleetGrain> logger) : Grain, IFleetGrain
{
    public async Task RegisterHostAsync(string host, string uri, CancellationToken cancellationToken = default)
    {
        GrainKeys.ValidateHost(host);
        var now = time.GetUtcNow();
        if (!state.State.Hosts.TryGetValue(host, out var record))
        {
            state.State.Hosts[host] = record = new HostRecord { FirstSeen = now };
        }

        record.Uri = uri;
        record.LastSeen = now;
        await state.WriteStateAsync(cancellationToken);
    }

    public Task<IReadOnlyList<HostRegistration>> ListHostsAsync(CancellationToken cancellationToken = default) =>
        Task.FromResult<IReadOnlyList<HostRegistration>>(
            [.. state.State.Hosts.OrderBy(h => h.Key, StringComparer.Ordinal).Select(h => new HostRegistration(h.Key, h.Value.Uri, h.Value.FirstSeen, h.Value.LastSeen))]);
}
