using Orchestrator.Grains.Policies;

namespace Orchestrator.Grains.Fleet;

/// <summary>
/// The fleet's side of policies: the VM index (fed by every host's sync, so VMs of a host that is down are still
/// known and can be recorded as skipped), the policy registry, admission slots and compliance.
/// </summary>
internal sealed partial class FleetGrain
{
    /// <summary>A slot older than this belongs to a run that is gone (its policy grain lost it): it no longer counts.</summary>

    public async Task ReportInventoryAsync(string host, IReadOnlyList<VmIndexEntry> vms, CancellationToken cancellationToken = default)
    {
        GrainKeys.ValidateHost(host);
        ArgumentNullException.ThrowIfNull(vms);
        var index = state.State.Vms;
        var changed = false;
        var reported = new HashSet<string>(StringComparer.Ordinal);
        foreach (var vm in vms)
        {
            var key = GrainKeys.Vm(host, vm.Name);
            reported.Add(key);
            if (!index.TryGetValue(key, out var record))
            {
                index[key] = record = new VmIndexRecord { Host = host, Name = vm.Name };
                changed = true;
            }

            changed |= Update(record, vm);
        }

        foreach (var record in index.Values.Where(r => r.Host == host && r.Present && !reported.Contains(GrainKeys.Vm(r.Host, r.Name))))
        {
            record.Present = false;
            changed = true;
        }

        if (changed)
        {
            await state.WriteStateAsync(cancellationToken);
        }
    }

    public async Task RecordProtectionAsync(string host, string vm, PolicyKind kind, DateTimeOffset at, CancellationToken cancellationToken = default)
    {
        if (!state.State.Vms.TryGetValue(GrainKeys.Vm(host, vm), out var record))
        {
            // Not synced yet: the host's next inventory sync brings the VM with this time.
            return;
        }

        var (backup, checkpoint) = kind == PolicyKind.LiveBackup
            ? (Latest(record.LastBackupAt, at), record.LastCheckpointAt)
            : (record.LastBackupAt, Latest(record.LastCheckpointAt, at));
        if (backup == record.LastBackupAt && checkpoint == record.LastCheckpointAt)
        {
            return;
        }

        (record.LastBackupAt, record.LastCheckpointAt) = (backup, checkpoint);
        await state.WriteStateAsync(cancellationToken);
    }

    public Task<IReadOnlyList<VmIndexEntry>> ListVmsAsync(CancellationToken cancellationToken = default) =>
        Task.FromResult<IReadOnlyList<VmIndexEntry>>([.. OrderedVms().Select(ToEntry)]);

    public Task<IReadOnlyList<VmIndexEntry>> SelectAsync(PolicySelector selector, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(selector);
        return Task.FromResult<IReadOnlyList<VmIndexEntry>>([.. OrderedVms()
            .Where(r => r.Present && PolicySelectorMatcher.Matches(selector, r.Host, r.Name, r.Labels))
            .Select(ToEntry)]);
    }

    public async Task RegisterPolicyAsync(PolicyRegistration policy, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(policy);
        var name = PolicyNames.Validate(policy.Spec.Name);
        if (state.State.Policies.TryGetValue(name, out var existing) && existing.Version == policy.Version)
        {
            return;
        }

        state.State.Policies[name] = new PolicyRegistrationRecord { Spec = PolicySpecRecord.From(policy.Spec), Version = policy.Version };
        await state.WriteStateAsync(cancellationToken);
    }

    public async Task UnregisterPolicyAsync(string name, CancellationToken cancellationToken = default)
    {
        // Leases are retired (admission lives in the policy runs' parts now); a leftover one is dropped with its policy.
        var slots = state.State.Leases.Where(l => l.Value.Policy == name).Select(l => l.Key).ToList();
        slots.ForEach(k => state.State.Leases.Remove(k));
        if (state.State.Policies.Remove(name) || slots.Count > 0)
        {
            await state.WriteStateAsync(cancellationToken);
        }
    }

    public Task<IReadOnlyList<PolicyRegistration>> ListPoliciesAsync(CancellationToken cancellationToken = default) =>
        Task.FromResult<IReadOnlyList<PolicyRegistration>>([.. state.State.Policies
            .OrderBy(p => p.Key, StringComparer.Ordinal)
            .Select(p => new PolicyRegistration(p.Value.Spec.ToContract(), p.Value.Version))]);

    public Task<IReadOnlyList<VmCompliance>> GetComplianceAsync(CancellationToken cancellationToken = default)
    {
        var result = ComputeCompliance(time.GetUtcNow());
        PublishCompliance(result);
        return Task.FromResult<IReadOnlyList<VmCompliance>>(result);
    }

    private List<VmCompliance> ComputeCompliance(DateTimeOffset now)
    {
        var policies = state.State.Policies.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => (p.Value.Spec.ToContract(), p.Value.Version)).ToList();
        var result = new List<VmCompliance>();
        foreach (var vm in OrderedVms())
        {
            var covered = policies
                .Where(p => PolicySelectorMatcher.Matches(p.Item1.Selector, vm.Host, vm.Name, vm.Labels))
                .Select(p => Assess(p.Item1, p.Version, vm, now))
                .ToList();
            var overall = covered.Count == 0 ? ComplianceStatus.Unprotected : covered.Max(c => Severity(c.Status)) switch
            {
                2 => ComplianceStatus.Never,
                1 => ComplianceStatus.OutOfRpo,
                _ => ComplianceStatus.Ok,
            };
            result.Add(new VmCompliance(vm.Host, vm.Name, vm.Present, covered, overall, vm.LastBackupAt, vm.LastCheckpointAt));
        }

        return result;
    }

    /// <summary>One policy's view of one VM: its newest good backup (or checkpoint) against the RPO.</summary>
    internal static PolicyCompliance Assess(PolicySpec policy, int version, VmIndexRecord vm, DateTimeOffset now)
    {
        var last = policy.Kind == PolicyKind.LiveBackup ? vm.LastBackupAt : vm.LastCheckpointAt;
        var status = last is null ? ComplianceStatus.Never
            : policy.Rpo > TimeSpan.Zero && now - last.Value > policy.Rpo ? ComplianceStatus.OutOfRpo
            : ComplianceStatus.Ok;
        return new PolicyCompliance(policy.Name, policy.Kind, version, last, policy.Rpo, status);
    }

    private static int Severity(ComplianceStatus status) => status switch
    {
        ComplianceStatus.Never => 2,
        ComplianceStatus.OutOfRpo => 1,
        _ => 0,
    };

    private IEnumerable<VmIndexRecord> OrderedVms() =>
        state.State.Vms.Values.OrderBy(v => v.Host, StringComparer.Ordinal).ThenBy(v => v.Name, StringComparer.Ordinal);

    private static VmIndexEntry ToEntry(VmIndexRecord r) =>
        new(r.Host, r.Name, r.Uuid, r.Present, new Dictionary<string, string>(r.Labels, StringComparer.Ordinal), r.LastBackupAt, r.LastCheckpointAt);

    /// <summary>Brings an index record up to a sync's entry; protection times only move forward. True when anything changed.</summary>
    private static bool Update(VmIndexRecord record, VmIndexEntry vm)
    {
        var backup = Latest(record.LastBackupAt, vm.LastBackupAt);
        var checkpoint = Latest(record.LastCheckpointAt, vm.LastCheckpointAt);
        var changed = record.Uuid != vm.Uuid
            || record.Present != vm.Present
            || !Labels.SameEntries(record.Labels, vm.Labels)
            || backup != record.LastBackupAt
            || checkpoint != record.LastCheckpointAt;
        record.Uuid = vm.Uuid;
        record.Present = vm.Present;
        record.Labels = new Dictionary<string, string>(vm.Labels, StringComparer.Ordinal);
        (record.LastBackupAt, record.LastCheckpointAt) = (backup, checkpoint);
        return changed;
    }

    private static DateTimeOffset? Latest(DateTimeOffset? a, DateTimeOffset? b) => a is null || (b is not null && b > a) ? b : a;
}
