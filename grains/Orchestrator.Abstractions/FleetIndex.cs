using Orleans.Concurrency;

namespace Orchestrator;

/// <summary>
/// One host's slice of the fleet's VM index (key: host name): its VMs' uuid, presence, labels and newest good backup
/// and checkpoint times. It lives on the host's silo, and on the calling silo while the host has none, so a host
/// that is down is still selected (and skipped) by policy runs and still listed by compliance. Fed by the host's
/// inventory syncs and by its VMs' protection reports; the fleet grain assembles fleet-wide views from all shards.
/// </summary>
[Alias("orchestrator.IHostIndexGrain")]
public interface IHostIndexGrain : IGrainWithStringKey
{
    /// <summary>The host's inventory sync: replaces this host's entries (VMs not listed are marked absent).</summary>
    [Alias("ReportInventory")]
    Task ReportInventoryAsync(IReadOnlyList<VmIndexEntry> vms, CancellationToken cancellationToken = default);

    /// <summary>A VM of this host finished a good backup (LiveBackup) or checkpoint (Checkpoint) at <paramref name="at"/>; persisted in batches.</summary>
    [Alias("RecordProtection")]
    Task RecordProtectionAsync(string vm, PolicyKind kind, DateTimeOffset at, CancellationToken cancellationToken = default);

    /// <summary>A test restore of the VM passed at <paramref name="at"/>, booting in <paramref name="bootSeconds"/> (for compliance's RTO).</summary>
    [Alias("RecordProvenRestore")]
    Task RecordProvenRestoreAsync(string vm, DateTimeOffset at, double bootSeconds, CancellationToken cancellationToken = default);

    /// <summary>Entries handed over from the fleet grain's old single index (migration): merged, times only move forward.</summary>
    [Alias("Merge")]
    Task MergeAsync(IReadOnlyList<VmIndexEntry> vms, CancellationToken cancellationToken = default);

    /// <summary>This host's VMs, ordered by name.</summary>
    [Alias("List")]
    Task<IReadOnlyList<VmIndexEntry>> ListAsync(CancellationToken cancellationToken = default);

    /// <summary>This host's present VMs that the selector matches, ordered by name.</summary>
    [Alias("Select")]
    Task<IReadOnlyList<VmIndexEntry>> SelectAsync(PolicySelector selector, CancellationToken cancellationToken = default);

    /// <summary>
    /// Compliance of this host's VMs under <paramref name="policies"/> at <paramref name="at"/>: the VM rows (ordered
    /// by name) unless <paramref name="withRows"/> is false, and the counts by status in either case.
    /// </summary>
    [Alias("GetCompliance")]
    Task<HostCompliance> GetComplianceAsync(IReadOnlyList<PolicyRegistration> policies, DateTimeOffset at, bool withRows = true, CancellationToken cancellationToken = default);
}

/// <summary>
/// One host's compliance: its VM rows (empty when not asked for) and the counts of its present VMs. Immutable: built
/// fresh for each answer and never changed after, so a caller on the shard's silo gets it without a deep copy.
/// </summary>
[GenerateSerializer]
[Immutable]
[Alias("orchestrator.HostCompliance")]
public sealed record HostCompliance(
    [property: Id(0)] string Host,
    [property: Id(1)] IReadOnlyList<VmCompliance> Vms,
    [property: Id(2)] ComplianceCounts Counts);

/// <summary>
/// Present VMs by overall status (indexed by <see cref="ComplianceStatus"/>) and, per policy, the present VMs it
/// selects by their status under it. Counts of several hosts add up (<see cref="Add"/>).
/// </summary>
[GenerateSerializer]
[Alias("orchestrator.ComplianceCounts")]
public sealed record ComplianceCounts(
    [property: Id(0)] long[] ByStatus,
    [property: Id(1)] IReadOnlyDictionary<string, long[]> ByPolicy)
{
    public static int StatusCount => Enum.GetValues<ComplianceStatus>().Length;

    public static ComplianceCounts Empty(IEnumerable<string> policies) =>
        new(new long[StatusCount], policies.ToDictionary(p => p, _ => new long[StatusCount], StringComparer.Ordinal));

    /// <summary>Counts one VM (present VMs only: a VM that vanished is listed but not counted).</summary>
    public void Count(VmCompliance vm)
    {
        if (!vm.Present)
        {
            return;
        }

        ByStatus[(int)vm.Status]++;
        foreach (var policy in vm.Policies)
        {
            if (ByPolicy.TryGetValue(policy.Policy, out var counts))
            {
                counts[(int)policy.Status]++;
            }
        }
    }

    /// <summary>Adds another host's counts into these (policies unknown here are ignored).</summary>
    public void Add(ComplianceCounts other)
    {
        ArgumentNullException.ThrowIfNull(other);
        for (var i = 0; i < ByStatus.Length && i < other.ByStatus.Length; i++)
        {
            ByStatus[i] += other.ByStatus[i];
        }

        foreach (var (policy, counts) in other.ByPolicy)
        {
            if (ByPolicy.TryGetValue(policy, out var mine))
            {
                for (var i = 0; i < mine.Length && i < counts.Length; i++)
                {
                    mine[i] += counts[i];
                }
            }
        }
    }
}
