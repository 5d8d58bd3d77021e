using Orleans.Concurrency;

namespace Orchestrator;

/// <summary>What a policy does to every VM it selects.</summary>
public enum PolicyKind
{
    /// <summary>A live backup (external overlays, copy, commit back) into the policy's target.</summary>
    LiveBackup = 0,

    /// <summary>An internal qcow2 checkpoint (disk + memory), pruned by the policy's retention.</summary>
    Checkpoint = 1,
}

/// <summary>
/// Which VMs a policy covers. Host and VM patterns are globs (<c>*</c> any run of characters, <c>?</c> one
/// character, case-sensitive); an empty list matches everything. Every label must be present on the VM with
/// exactly that value (labels come from the VM's libvirt metadata), or any value when the value is <c>*</c>.
/// </summary>
[GenerateSerializer]
[Alias("orchestrator.PolicySelector")]
public sealed record PolicySelector
{
    [Id(0)]
    public IReadOnlyList<string> Hosts { get; init; } = [];

    [Id(1)]
    public IReadOnlyList<string> Vms { get; init; } = [];

    [Id(2)]
    public IReadOnlyDictionary<string, string> Labels { get; init; } = new Dictionary<string, string>(StringComparer.Ordinal);
}

/// <summary>A cron expression (5 fields, or 6 with seconds first) in an IANA time zone.</summary>
[GenerateSerializer]
[Alias("orchestrator.PolicySchedule")]
public sealed record PolicySchedule(
    [property: Id(0)] string Cron,
    [property: Id(1)] string TimeZone = "UTC");

/// <summary>Admission budgets of one policy's runs.</summary>
[GenerateSerializer]
[Alias("orchestrator.PolicyConcurrency")]
public sealed record PolicyConcurrency(
    [property: Id(0)] int PerHost = 1,
    [property: Id(1)] int Fleet = 4);

/// <summary>
/// A fleet-wide policy as submitted (YAML/JSON through the CLI, or protobuf). Error fields use the file's
/// snake_case paths: <c>name</c>, <c>kind</c>, <c>selector.hosts[0]</c>, <c>selector.labels.tier</c>,
/// <c>schedule.cron</c>, <c>schedule.time_zone</c>, <c>retention.keep_last</c>, <c>target</c>, <c>quiesce</c>,
/// <c>bandwidth</c>, <c>concurrency.per_host</c>, <c>concurrency.fleet</c>, <c>rpo</c>.
/// </summary>
[GenerateSerializer]
[Alias("orchestrator.PolicySpec")]
public sealed record PolicySpec
{
    /// <summary>1-40 of [a-z0-9-], starting with a letter or digit; the policy grain's key.</summary>
    [Id(0)]
    public string Name { get; init; } = "";

    [Id(1)]
    public PolicyKind Kind { get; init; }

    [Id(2)]
    public string Description { get; init; } = "";

    [Id(3)]
    public PolicySelector Selector { get; init; } = new();

    /// <summary>When runs start by themselves; null = only on demand (<c>policy run</c>).</summary>
    [Id(4)]
    public PolicySchedule? Schedule { get; init; }

    /// <summary>What survives pruning (backup sets of a VM in the target, or the policy's checkpoints of a VM).</summary>
    [Id(5)]
    public RetentionPolicy Retention { get; init; } = new(KeepLast: 7);

    /// <summary>
    /// Live backups only: target directory template with the placeholders <c>{host}</c>, <c>{vm}</c> and
    /// <c>{policy}</c>; must stay inside the configured backup roots. Null = each host's default target.
    /// </summary>
    [Id(6)]
    public string? Target { get; init; }

    [Id(7)]
    public QuiesceMode Quiesce { get; init; } = QuiesceMode.Off;

    [Id(8)]
    public bool Verify { get; init; } = true;

    /// <summary>Copy bandwidth limit per VM in bytes per second; 0 = unlimited.</summary>
    [Id(9)]
    public long BandwidthBytesPerSecond { get; init; }

    [Id(10)]
    public PolicyConcurrency Concurrency { get; init; } = new();

    /// <summary>Recovery point objective: how old a VM's newest good backup (or checkpoint) may be; zero = not tracked.</summary>
    [Id(11)]
    public TimeSpan Rpo { get; init; }

    /// <summary>Live backups only: test restores after runs (every N runs or a duration), their probe and an optional RTO; null = none.</summary>
    [Id(12)]
    public TestRestoreSpec? TestRestore { get; init; }

    /// <summary>Live backups only: full (the overlay method, a full copy every run) or auto (incremental, full when the chain cannot be used).</summary>
    [Id(13)]
    public BackupLevel Level { get; init; } = BackupLevel.Full;

    /// <summary>Level auto only: a full when the chain holds this many runs (the full counted); 0 = no count.</summary>
    [Id(14)]
    public int FullEveryRuns { get; init; }

    /// <summary>Level auto only: a full when the chain's full is this old; null = no age.</summary>
    [Id(15)]
    public TimeSpan? FullEvery { get; init; }
}

/// <summary>A live-backup policy's level.</summary>
public enum BackupLevel
{
    /// <summary>A full copy every run (the overlay method).</summary>
    Full = 0,

    /// <summary>Incremental (backup job with checkpoints) when a valid chain exists, else a full with the reason.</summary>
    Auto = 1,
}

/// <summary>A stored policy: its spec, version (bumped by every change) and schedule state.</summary>
[GenerateSerializer]
[Alias("orchestrator.PolicyView")]
public sealed record PolicyView(
    [property: Id(0)] PolicySpec Spec,
    [property: Id(1)] int Version,
    [property: Id(2)] DateTimeOffset CreatedAt,
    [property: Id(3)] DateTimeOffset UpdatedAt,
    [property: Id(4)] DateTimeOffset? NextRunAt,
    [property: Id(5)] PolicyRunView? LastRun,
    [property: Id(6)] IReadOnlyList<string> PendingRetries)
{
    public string Name => Spec.Name;
}

[GenerateSerializer]
[Alias("orchestrator.PolicyApplyResult")]
public sealed record PolicyApplyResult(
    [property: Id(0)] PolicyView Policy,
    [property: Id(1)] bool Created,
    [property: Id(2)] bool Changed);

public enum PolicyRunTrigger
{
    Manual = 0,
    Schedule = 1,

    /// <summary>Re-runs the VMs an earlier run skipped because their host was down.</summary>
    Retry = 2,
}

public enum PolicyRunState
{
    Running = 0,

    /// <summary>Every target succeeded.</summary>
    Completed = 1,

    /// <summary>Finished; some targets failed or were skipped (skipped ones are retried when their host returns).</summary>
    Partial = 2,

    /// <summary>Finished and no target succeeded (or the run could not start).</summary>
    Failed = 3,
}

public enum PolicyTargetStatus
{
    /// <summary>Waiting for admission.</summary>
    Pending = 0,

    /// <summary>Admitted: holds a slot, its workflow runs on the VM's host.</summary>
    Running = 1,
    Succeeded = 2,
    Failed = 3,

    /// <summary>Not run: the host's silo was down (retried when it returns) or the VM vanished.</summary>
    Skipped = 4,
}

/// <summary>One VM of a policy run. <see cref="AdmittedAt"/>..<see cref="ReleasedAt"/> is the time it held its admission slot.</summary>
[GenerateSerializer]
[Alias("orchestrator.PolicyTargetView")]
public sealed record PolicyTargetView(
    [property: Id(0)] string Host,
    [property: Id(1)] string Vm,
    [property: Id(2)] PolicyTargetStatus Status,
    [property: Id(3)] string? BackupRun,
    [property: Id(4)] string? Checkpoint,
    [property: Id(5)] string? Reason,
    [property: Id(6)] DateTimeOffset? AdmittedAt,
    [property: Id(7)] DateTimeOffset? ReleasedAt,
    [property: Id(8)] int Attempts)
{
    public string Key => GrainKeys.Vm(Host, Vm);
}

/// <summary>A policy run as clients see it. <see cref="Version"/> grows with every change (for watching).</summary>
[GenerateSerializer]
[Alias("orchestrator.PolicyRunView")]
public sealed record PolicyRunView(
    [property: Id(0)] string RunId,
    [property: Id(1)] string Policy,
    [property: Id(2)] int PolicyVersion,
    [property: Id(3)] PolicyKind Kind,
    [property: Id(4)] PolicyRunTrigger Trigger,
    [property: Id(5)] string? RetryOf,
    [property: Id(6)] PolicyRunState State,
    [property: Id(7)] DateTimeOffset StartedAt,
    [property: Id(8)] DateTimeOffset? EndedAt,
    [property: Id(9)] IReadOnlyList<PolicyTargetView> Targets,
    [property: Id(10)] PolicyConcurrency Concurrency,
    [property: Id(11)] string? TraceId,
    [property: Id(12)] long Version,
    [property: Id(13)] string? Error)
{
    public bool IsTerminal => State != PolicyRunState.Running;
}

/// <summary>How many of a run's targets are in each status (over every target of the run).</summary>
[GenerateSerializer]
[Alias("orchestrator.PolicyRunCounts")]
public sealed record PolicyRunCounts(
    [property: Id(0)] int Pending,
    [property: Id(1)] int Running,
    [property: Id(2)] int Succeeded,
    [property: Id(3)] int Failed,
    [property: Id(4)] int Skipped)
{
    public static readonly PolicyRunCounts Zero = new(0, 0, 0, 0, 0);

    public int Total => Pending + Running + Succeeded + Failed + Skipped;

    public static PolicyRunCounts Of(IEnumerable<PolicyTargetStatus> statuses)
    {
        ArgumentNullException.ThrowIfNull(statuses);
        Span<int> n = stackalloc int[5];
        foreach (var status in statuses)
        {
            n[(int)status]++;
        }

        return new PolicyRunCounts(n[0], n[1], n[2], n[3], n[4]);
    }

    public PolicyRunCounts Plus(PolicyRunCounts other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return new(Pending + other.Pending, Running + other.Running, Succeeded + other.Succeeded, Failed + other.Failed, Skipped + other.Skipped);
    }
}

/// <summary>
/// Where a watcher of a run stands, per host part: the part's activation (<see cref="Epoch"/>, 0 = none seen), the
/// part's version it has seen, and the part's counts then. Opaque to clients (the gRPC watch keeps it server-side).
/// </summary>
[GenerateSerializer]
[Alias("orchestrator.PolicyRunPartCursor")]
public sealed record PolicyRunPartCursor(
    [property: Id(0)] string Host,
    [property: Id(1)] long Epoch,
    [property: Id(2)] long Version,
    [property: Id(3)] PolicyRunCounts Counts);

/// <summary>What a watcher has seen of a run: the header's version and, per host, its part's cursor.</summary>
[GenerateSerializer]
[Alias("orchestrator.PolicyRunCursor")]
public sealed record PolicyRunCursor(
    [property: Id(0)] string RunId,
    [property: Id(1)] long Header,
    [property: Id(2)] IReadOnlyList<PolicyRunPartCursor> Parts)
{
    /// <summary>Same position (a part's version moved without a visible change counts as a move too).</summary>
    public bool SameAs(PolicyRunCursor? other) =>
        other is not null && RunId == other.RunId && Header == other.Header && Parts.Count == other.Parts.Count
        && Parts.Zip(other.Parts).All(p => p.First.Host == p.Second.Host && p.First.Epoch == p.Second.Epoch && p.First.Version == p.Second.Version);
}

/// <summary>
/// A run's changes since a cursor: <see cref="Run"/> is the header (state, times, version, error) whose
/// <see cref="PolicyRunView.Targets"/> holds only the targets that changed since the cursor, or every target when
/// <see cref="Full"/> (no cursor given: replace what you keep); apply them by host/VM (targets are never removed
/// from a run). <see cref="Counts"/> covers every target. Pass <see cref="Cursor"/> back to get the next changes.
/// </summary>
[GenerateSerializer]
[Alias("orchestrator.PolicyRunChanges")]
public sealed record PolicyRunChanges(
    [property: Id(0)] PolicyRunView Run,
    [property: Id(1)] bool Full,
    [property: Id(2)] PolicyRunCounts Counts,
    [property: Id(3)] PolicyRunCursor Cursor);

/// <summary>
/// One fleet-wide policy (key: policy name). Placed on the silo that first calls it; its state is persisted
/// and a reminder wakes it for schedules, retries and to resume a run after a crash.
/// </summary>
[Alias("orchestrator.IBackupPolicyGrain")]
public interface IBackupPolicyGrain : IGrainWithStringKey
{
    /// <summary>
    /// Creates or updates the policy (key must equal spec.Name). A changed spec bumps the version; an identical
    /// one changes nothing. InvalidArgument naming the field for bad input; the kind of an existing policy
    /// cannot change (InvalidArgument on <c>kind</c>). Nothing is stored when validation fails.
    /// </summary>
    [Alias("Apply")]
    Task<PolicyApplyResult> ApplyAsync(PolicySpec spec, CancellationToken cancellationToken = default);

    /// <summary>NotFound when the policy does not exist.</summary>
    [AlwaysInterleave]
    [Alias("Get")]
    Task<PolicyView> GetAsync(CancellationToken cancellationToken = default);

    /// <summary>Removes the policy and its schedule; Conflict while a run is in progress. False when there was none.</summary>
    [Alias("Delete")]
    Task<bool> DeleteAsync(CancellationToken cancellationToken = default);

    /// <summary>Starts a run now; Conflict when one is already running (its id is in the message).</summary>
    [Alias("RunNow")]
    Task<PolicyRunView> RunNowAsync(CancellationToken cancellationToken = default);

    [AlwaysInterleave]
    [Alias("GetRun")]
    Task<PolicyRunView> GetRunAsync(string runId, CancellationToken cancellationToken = default);

    /// <summary>Newest first, at most <paramref name="limit"/>.</summary>
    [AlwaysInterleave]
    [Alias("ListRuns")]
    Task<IReadOnlyList<PolicyRunView>> ListRunsAsync(int limit = 20, CancellationToken cancellationToken = default);

    /// <summary>Returns the run once its version is above <paramref name="afterVersion"/>, it ended, or after <paramref name="maxWait"/>.</summary>
    [AlwaysInterleave]
    [Alias("WaitRun")]
    Task<PolicyRunView> WaitRunAsync(string runId, long afterVersion, TimeSpan maxWait, CancellationToken cancellationToken = default);

    /// <summary>
    /// A run's changes since <paramref name="since"/> (null: the whole run, <see cref="PolicyRunChanges.Full"/>): returns
    /// once something changed, the run ended, or after <paramref name="maxWait"/> (then with no targets). Costs
    /// O(hosts + targets changed), not O(targets): each host's part keeps a change log of its targets. A part that
    /// cannot answer from its log (it was re-activated since, on another silo) sends all of its targets once.
    /// </summary>
    [AlwaysInterleave]
    [Alias("WaitRunChanges")]
    Task<PolicyRunChanges> WaitRunChangesAsync(string runId, PolicyRunCursor? since, TimeSpan maxWait, CancellationToken cancellationToken = default);
}

/// <summary>A VM in the fleet's index (kept up to date by every host's inventory sync and every finished operation).</summary>
[GenerateSerializer]
[Alias("orchestrator.VmIndexEntry")]
public sealed record VmIndexEntry(
    [property: Id(0)] string Host,
    [property: Id(1)] string Name,
    [property: Id(2)] Guid Uuid,
    [property: Id(3)] bool Present,
    [property: Id(4)] IReadOnlyDictionary<string, string> Labels,
    [property: Id(5)] DateTimeOffset? LastBackupAt,
    [property: Id(6)] DateTimeOffset? LastCheckpointAt)
{
    public string Key => GrainKeys.Vm(Host, Name);
}

/// <summary>A registered policy as the fleet keeps it (for selection and compliance).</summary>
[GenerateSerializer]
[Alias("orchestrator.PolicyRegistration")]
public sealed record PolicyRegistration(
    [property: Id(0)] PolicySpec Spec,
    [property: Id(1)] int Version);

public enum ComplianceStatus
{
    /// <summary>No policy selects the VM.</summary>
    Unprotected = 0,

    /// <summary>The newest good backup (or checkpoint) is younger than the RPO (or the policy has no RPO).</summary>
    Ok = 1,

    /// <summary>The newest good backup is older than the RPO.</summary>
    OutOfRpo = 2,

    /// <summary>Selected, but never backed up (or checkpointed).</summary>
    Never = 3,
}

[GenerateSerializer]
[Alias("orchestrator.PolicyCompliance")]
public sealed record PolicyCompliance(
    [property: Id(0)] string Policy,
    [property: Id(1)] PolicyKind Kind,
    [property: Id(2)] int Version,
    [property: Id(3)] DateTimeOffset? LastGoodAt,
    [property: Id(4)] TimeSpan Rpo,
    [property: Id(5)] ComplianceStatus Status,
    [property: Id(6)] TimeSpan? Rto = null,
    [property: Id(7)] bool RtoMissed = false);

/// <summary>A VM with every policy that selects it; <see cref="Status"/> is the worst of them.</summary>
[GenerateSerializer]
[Alias("orchestrator.VmCompliance")]
public sealed record VmCompliance(
    [property: Id(0)] string Host,
    [property: Id(1)] string Vm,
    [property: Id(2)] bool Present,
    [property: Id(3)] IReadOnlyList<PolicyCompliance> Policies,
    [property: Id(4)] ComplianceStatus Status,
    [property: Id(5)] DateTimeOffset? LastBackupAt,
    [property: Id(6)] DateTimeOffset? LastCheckpointAt,
    [property: Id(7)] DateTimeOffset? LastProvenRestoreAt = null,
    [property: Id(8)] double? LastProvenBootSeconds = null,
    [property: Id(9)] bool RtoMissed = false)
{
    public string Key => GrainKeys.Vm(Host, Vm);
}

/// <summary>Policy names: what the orchestrator accepts (they become grain keys and parts of checkpoint names).</summary>
public static partial class PolicyNames
{
    /// <summary>Throws an InvalidArgument naming <paramref name="field"/> unless the name is 1-40 of [a-z0-9-], starting with a letter or digit.</summary>
    public static string Validate(string? name, string field = "name")
    {
        if (string.IsNullOrWhiteSpace(name))
        {
            throw OrchestratorException.InvalidArgument(field, "a policy name is required");
        }

        if (!NamePattern().IsMatch(name))
        {
            throw OrchestratorException.InvalidArgument(field, $"{OrchestratorException.Quote(name)} is not a valid policy name (1-40 lowercase letters, digits or '-', starting with a letter or digit)");
        }

        return name;
    }

    [System.Text.RegularExpressions.GeneratedRegex("^[a-z0-9][a-z0-9-]{0,39}\\z")]
    private static partial System.Text.RegularExpressions.Regex NamePattern();
}
