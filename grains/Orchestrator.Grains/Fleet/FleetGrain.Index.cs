namespace Orchestrator.Grains.Fleet;

/// <summary>
/// Fleet-wide views of the VM index, assembled from the hosts' index shards (<see cref="HostIndexGrain"/>): every
/// registered host's shard is asked in parallel, at most <see cref="FleetIndexOptions.QueryFanOut"/> at a time, and
/// the answers are concatenated in host order (each shard answers in VM name order). The fleet grain itself keeps
/// only the host and policy registries; it is on no per-VM path.
/// </summary>
internal sealed partial class FleetGrain
{
    private IHostIndexGrain Shard(string host) => GrainFactory.GetGrain<IHostIndexGrain>(host);

    /// <summary>Registered hosts and hosts whose shard got VMs through this grain, in order.</summary>
    private List<string> IndexedHosts() =>
        [.. state.State.Hosts.Keys.Union(state.State.IndexHosts, StringComparer.Ordinal).Order(StringComparer.Ordinal)];

    private List<PolicyRegistration> RegisteredPolicies() =>
        [.. state.State.Policies.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => new PolicyRegistration(p.Value.Spec.ToContract(), p.Value.Version))];

    private Task<T[]> AskShardsAsync<T>(IReadOnlyList<string> hosts, Func<IHostIndexGrain, Task<T>> call) =>
        BoundedFanOut.RunAsync(hosts, indexOptions.Value.QueryFanOut, host => call(Shard(host)));

    public Task<IReadOnlyList<string>> ListIndexHostsAsync(CancellationToken cancellationToken = default) =>
        Task.FromResult<IReadOnlyList<string>>(IndexedHosts());

    /// <summary>Forwards to the host's shard (hosts report to their shard directly); the host joins the registry of shards.</summary>
    public async Task ReportInventoryAsync(string host, IReadOnlyList<VmIndexEntry> vms, CancellationToken cancellationToken = default)
    {
        GrainKeys.ValidateHost(host);
        ArgumentNullException.ThrowIfNull(vms);
        if (state.State.IndexHosts.Add(host))
        {
            await state.WriteStateAsync(cancellationToken);
        }

        await Shard(host).ReportInventoryAsync([.. vms.Select(vm => vm.Host == host ? vm : vm with { Host = host })], cancellationToken);
    }

    /// <summary>Forwards to the host's shard (VM grains report to their shard directly).</summary>
    public Task RecordProtectionAsync(string host, string vm, PolicyKind kind, DateTimeOffset at, CancellationToken cancellationToken = default)
    {
        GrainKeys.ValidateHost(host);
        return Shard(host).RecordProtectionAsync(vm, kind, at, cancellationToken);
    }

    public async Task<IReadOnlyList<VmIndexEntry>> ListVmsAsync(CancellationToken cancellationToken = default)
    {
        var answers = await AskShardsAsync(IndexedHosts(), shard => shard.ListAsync(cancellationToken));
        return [.. answers.SelectMany(a => a)];
    }

    public async Task<IReadOnlyList<VmIndexEntry>> SelectAsync(PolicySelector selector, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(selector);

        // Only the shards of hosts the selector's host globs can match.
        var hosts = IndexedHosts().Where(h => VmIndex.MayMatchHost(selector, h)).ToList();
        var answers = await AskShardsAsync(hosts, shard => shard.SelectAsync(selector, cancellationToken));
        return [.. answers.SelectMany(a => a)];
    }

    public async Task<IReadOnlyList<VmCompliance>> GetComplianceAsync(CancellationToken cancellationToken = default)
    {
        var (policies, now) = (RegisteredPolicies(), time.GetUtcNow());
        var answers = await AskShardsAsync(IndexedHosts(), shard => shard.GetComplianceAsync(policies, now, withRows: true, cancellationToken));
        PublishCompliance(policies, answers);
        return [.. answers.SelectMany(a => a.Vms)];
    }

    /// <summary>The gauges' numbers: only the shards' counts cross the wire, not a row per VM.</summary>
    private async Task RefreshComplianceMetricsAsync()
    {
        var (policies, now) = (RegisteredPolicies(), time.GetUtcNow());
        var answers = await AskShardsAsync(IndexedHosts(), shard => shard.GetComplianceAsync(policies, now, withRows: false));
        PublishCompliance(policies, answers);
    }

    private void PublishCompliance(IReadOnlyList<PolicyRegistration> policies, IEnumerable<HostCompliance> answers)
    {
        var counts = ComplianceCounts.Empty(policies.Select(p => p.Spec.Name));
        foreach (var answer in answers)
        {
            counts.Add(answer.Counts);
        }

        ComplianceMetrics.Publish(this, FleetId, counts);
    }

    /// <summary>
    /// State written before the shards existed holds every VM in <see cref="FleetState.Vms"/>: each host's records go
    /// to its shard (merged: times only move forward, presence and labels from the record), then the old index is
    /// stored empty. A failure leaves it in place and the next activation hands it over again (merging is idempotent).
    /// </summary>
    private async Task MigrateIndexAsync(CancellationToken cancellationToken)
    {
        if (state.State.Vms.Count == 0)
        {
            return;
        }

        var valid = state.State.Vms.Values.Where(IsValid).ToList();
        if (valid.Count < state.State.Vms.Count)
        {
            LogIndexRecordsDropped(logger, state.State.Vms.Count - valid.Count);
        }

        var byHost = valid.GroupBy(r => r.Host, StringComparer.Ordinal).ToList();
        await BoundedFanOut.RunAsync(byHost, indexOptions.Value.QueryFanOut, async group =>
        {
            await Shard(group.Key).MergeAsync([.. group.Select(VmIndex.ToEntry)], cancellationToken);
            return group.Count();
        });
        state.State.IndexHosts.UnionWith(byHost.Select(g => g.Key));
        state.State.Vms.Clear();
        await state.WriteStateAsync(cancellationToken);
        LogIndexMigrated(logger, valid.Count, byHost.Count);

        static bool IsValid(VmIndexRecord record)
        {
            try
            {
                GrainKeys.ValidateHost(record.Host);
                GrainKeys.ValidateVmName(record.Name);
                return true;
            }
            catch (OrchestratorException)
            {
                return false;
            }
        }
    }
}
