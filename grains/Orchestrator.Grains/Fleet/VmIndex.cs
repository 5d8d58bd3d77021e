using Orchestrator.Grains.Policies;

namespace Orchestrator.Grains.Fleet;

/// <summary>The rules of the VM index, shared by the host shards and the migration from the fleet grain's old single index.</summary>
internal static class VmIndex
{
    /// <summary>What changed when an entry was applied to a record.</summary>
    [Flags]
    internal enum Change
    {
        None = 0,

        /// <summary>Uuid, presence or labels (or a new record): rare, written at once.</summary>
        Inventory = 1,

        /// <summary>A backup or checkpoint time moved forward: frequent, written in batches.</summary>
        Protection = 2,
    }

    /// <summary>Brings a record up to an entry: uuid, presence and labels from the entry, protection times only move forward.</summary>
    public static Change Apply(VmIndexRecord record, VmIndexEntry vm)
    {
        var change = Change.None;
        if (record.Uuid != vm.Uuid || record.Present != vm.Present || !Labels.SameEntries(record.Labels, vm.Labels))
        {
            record.Uuid = vm.Uuid;
            record.Present = vm.Present;
            record.Labels = new Dictionary<string, string>(vm.Labels, StringComparer.Ordinal);
            change |= Change.Inventory;
        }

        if (MoveForward(record, PolicyKind.LiveBackup, vm.LastBackupAt) | MoveForward(record, PolicyKind.Checkpoint, vm.LastCheckpointAt))
        {
            change |= Change.Protection;
        }

        return change;
    }

    /// <summary>Sets the record's backup (or checkpoint) time to <paramref name="at"/> when that is newer; true when it moved.</summary>
    public static bool MoveForward(VmIndexRecord record, PolicyKind kind, DateTimeOffset? at)
    {
        var current = kind == PolicyKind.LiveBackup ? record.LastBackupAt : record.LastCheckpointAt;
        if (at is null || (current is not null && current >= at))
        {
            return false;
        }

        if (kind == PolicyKind.LiveBackup)
        {
            record.LastBackupAt = at;
        }
        else
        {
            record.LastCheckpointAt = at;
        }

        return true;
    }

    public static VmIndexEntry ToEntry(VmIndexRecord r) =>
        new(r.Host, r.Name, r.Uuid, r.Present, new Dictionary<string, string>(r.Labels, StringComparer.Ordinal), r.LastBackupAt, r.LastCheckpointAt);

    public static VmIndexEntry ToEntry(VmIndexRecord r, string host) => ToEntry(r) with { Host = host };

    /// <summary>Every policy's view of one VM and the worst of them (Unprotected when no policy selects it).</summary>
    public static VmCompliance Assess(IReadOnlyList<PolicyRegistration> policies, string host, VmIndexRecord vm, DateTimeOffset now)
    {
        var covered = new List<PolicyCompliance>();
        foreach (var policy in policies)
        {
            if (PolicySelectorMatcher.Matches(policy.Spec.Selector, host, vm.Name, vm.Labels))
            {
                covered.Add(Assess(policy.Spec, policy.Version, vm, now));
            }
        }

        var overall = covered.Count == 0 ? ComplianceStatus.Unprotected : covered.Max(c => Severity(c.Status)) switch
        {
            2 => ComplianceStatus.Never,
            1 => ComplianceStatus.OutOfRpo,
            _ => ComplianceStatus.Ok,
        };
        return new VmCompliance(host, vm.Name, vm.Present, covered, overall, vm.LastBackupAt, vm.LastCheckpointAt, vm.ProvenRestoreAt, vm.ProvenBootSeconds, covered.Any(c => c.RtoMissed));
    }

    /// <summary>One policy's view of one VM: its newest good backup (or checkpoint) against the RPO.</summary>
    public static PolicyCompliance Assess(PolicySpec policy, int version, VmIndexRecord vm, DateTimeOffset now)
    {
        var last = policy.Kind == PolicyKind.LiveBackup ? vm.LastBackupAt : vm.LastCheckpointAt;
        var status = last is null ? ComplianceStatus.Never
            : policy.Rpo > TimeSpan.Zero && now - last.Value > policy.Rpo ? ComplianceStatus.OutOfRpo
            : ComplianceStatus.Ok;
        var rto = policy.TestRestore?.Rto;
        return new PolicyCompliance(policy.Name, policy.Kind, version, last, policy.Rpo, status, rto, Backups.TestRestoreSchedule.RtoMissed(rto, vm.ProvenBootSeconds));
    }

    private static int Severity(ComplianceStatus status) => status switch
    {
        ComplianceStatus.Never => 2,
        ComplianceStatus.OutOfRpo => 1,
        _ => 0,
    };

    /// <summary>Whether a selector can match any VM of <paramref name="host"/> (its host globs): a fleet-wide selection asks only those shards.</summary>
    public static bool MayMatchHost(PolicySelector selector, string host) =>
        selector.Hosts.Count == 0 || selector.Hosts.Any(p => PolicySelectorMatcher.Glob(p, host));
}
