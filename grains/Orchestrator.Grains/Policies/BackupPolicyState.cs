using MessagePack;

namespace Orchestrator.Grains.Policies;

/// <summary>A policy grain's persisted state: the spec and version, the schedule, its runs and the VMs waiting for their host.</summary>
[GenerateSerializer]
[Alias("orchestrator.BackupPolicyState")]
[MessagePackObject]
public sealed record class BackupPolicyState
{
    [Id(0)]
    [Key(0)]
    public bool Exists { get; set; }

    [Id(1)]
    [Key(1)]
    public PolicySpecRecord Spec { get; set; } = new();

    [Id(2)]
    [Key(2)]
    public int Version { get; set; }

    [Id(3)]
    [Key(3)]
    public DateTimeOffset CreatedAt { get; set; }

    [Id(4)]
    [Key(4)]
    public DateTimeOffset UpdatedAt { get; set; }

    /// <summary>The next scheduled run; null without a schedule.</summary>
    [Id(5)]
    [Key(5)]
    public DateTimeOffset? NextRunAt { get; set; }

    /// <summary>
    /// Retired: every run, finished ones included, as the code before <see cref="PolicyRunHistoryState"/> stored them.
    /// Still read: on activation the finished ones move to the history and one still running becomes
    /// <see cref="ActiveRun"/>, then this is emptied; never added to.
    /// </summary>
    [Id(6)]
    [Key(6)]
    public List<PolicyRunRecord> LegacyRuns { get; set; } = [];

    /// <summary>
    /// The run in progress: its header only (spec, trigger, times, one <see cref="PolicyRunPartRecord"/> per host with
    /// its budget grant); the VMs live in the per-host parts (<see cref="IPolicyHostRunGrain"/>). A run written by
    /// the code before per-host parts carries every VM in <see cref="PolicyRunRecord.Targets"/> instead: it is handed
    /// to parts when the policy activates. Null between runs.
    /// </summary>
    [Id(9)]
    [Key(9)]
    public PolicyRunRecord? ActiveRun { get; set; }

    /// <summary>VMs skipped because their host's silo was down, to run again when it is back.</summary>
    [Id(7)]
    [Key(7)]
    public List<PendingRetryRecord> PendingRetries { get; set; } = [];

    /// <summary>Scheduled slots that found a run still going (not run, counted).</summary>
    [Id(8)]
    [Key(8)]
    public int MissedSlots { get; set; }

    /// <summary>
    /// Retired with the fleet grain's admission slots (budgets are per-run grants now): still read, emptied when an
    /// old-shape run is handed to parts, never added to.
    /// </summary>
    [Id(10)]
    [Key(10)]
    public List<string> UnreleasedRuns { get; set; } = [];
}

/// <summary>
/// A policy's finished runs, oldest first, in their own state: written once per run, so a run's many small changes
/// do not rewrite the whole history.
/// </summary>
[GenerateSerializer]
[Alias("orchestrator.PolicyRunHistoryState")]
[MessagePackObject]
public sealed record class PolicyRunHistoryState
{
    [Id(0)]
    [Key(0)]
    public List<PolicyRunRecord> Runs { get; set; } = [];
}

[GenerateSerializer]
[Alias("orchestrator.PolicySpecRecord")]
[MessagePackObject]
public sealed record class PolicySpecRecord
{
    [Id(0)]
    [Key(0)]
    public string Name { get; set; } = "";

    [Id(1)]
    [Key(1)]
    public PolicyKind Kind { get; set; }

    [Id(2)]
    [Key(2)]
    public string Description { get; set; } = "";

    [Id(3)]
    [Key(3)]
    public List<string> Hosts { get; set; } = [];

    [Id(4)]
    [Key(4)]
    public List<string> Vms { get; set; } = [];

    [Id(5)]
    [Key(5)]
    public Dictionary<string, string> Labels { get; set; } = new(StringComparer.Ordinal);

    [Id(6)]
    [Key(6)]
    public string? Cron { get; set; }

    [Id(7)]
    [Key(7)]
    public string TimeZone { get; set; } = "UTC";

    /// <summary>keep_last, hourly, daily, weekly, monthly.</summary>
    [Id(8)]
    [Key(8)]
    public int[] Retention { get; set; } = [0, 0, 0, 0, 0];

    [Id(9)]
    [Key(9)]
    public string? Target { get; set; }

    [Id(10)]
    [Key(10)]
    public QuiesceMode Quiesce { get; set; }

    [Id(11)]
    [Key(11)]
    public bool Verify { get; set; }

    [Id(12)]
    [Key(12)]
    public long BandwidthBytesPerSecond { get; set; }

    [Id(13)]
    [Key(13)]
    public int PerHost { get; set; } = 1;

    [Id(14)]
    [Key(14)]
    public int Fleet { get; set; } = 1;

    [Id(15)]
    [Key(15)]
    public TimeSpan Rpo { get; set; }

    /// <summary>test_restore's probe (text form); null: the policy has no test_restore.</summary>
    [Id(16)]
    [Key(16)]
    public string? TestProbe { get; set; }

    [Id(17)]
    [Key(17)]
    public int TestEveryRuns { get; set; }

    [Id(18)]
    [Key(18)]
    public TimeSpan? TestEvery { get; set; }

    [Id(19)]
    [Key(19)]
    public TimeSpan? TestRto { get; set; }

    [Id(20)]
    [Key(20)]
    public TimeSpan? TestTimeout { get; set; }

    [Id(21)]
    [Key(21)]
    public BackupLevel Level { get; set; }

    [Id(22)]
    [Key(22)]
    public int FullEveryRuns { get; set; }

    [Id(23)]
    [Key(23)]
    public TimeSpan? FullEvery { get; set; }

    /// <summary>The policy's test_restore, or null.</summary>
    public TestRestoreSpec? TestRestoreContract() =>
        TestProbe is null ? null : new TestRestoreSpec(TestEveryRuns, TestEvery, Orchestrator.TestProbe.Parse(TestProbe, "test_restore.probe"), TestRto, TestTimeout);

    public static PolicySpecRecord From(PolicySpec spec) => new()
    {
        Name = spec.Name,
        Kind = spec.Kind,
        Description = spec.Description,
        Hosts = [.. spec.Selector.Hosts],
        Vms = [.. spec.Selector.Vms],
        Labels = new Dictionary<string, string>(spec.Selector.Labels, StringComparer.Ordinal),
        Cron = spec.Schedule?.Cron,
        TimeZone = spec.Schedule?.TimeZone ?? "UTC",
        Retention = [spec.Retention.KeepLast, spec.Retention.Hourly, spec.Retention.Daily, spec.Retention.Weekly, spec.Retention.Monthly],
        Target = spec.Target,
        Quiesce = spec.Quiesce,
        Verify = spec.Verify,
        BandwidthBytesPerSecond = spec.BandwidthBytesPerSecond,
        PerHost = spec.Concurrency.PerHost,
        Fleet = spec.Concurrency.Fleet,
        Rpo = spec.Rpo,
        TestProbe = spec.TestRestore?.Probe.ToString(),
        TestEveryRuns = spec.TestRestore?.EveryRuns ?? 0,
        TestEvery = spec.TestRestore?.Every,
        TestRto = spec.TestRestore?.Rto,
        TestTimeout = spec.TestRestore?.Timeout,
        Level = spec.Level,
        FullEveryRuns = spec.FullEveryRuns,
        FullEvery = spec.FullEvery,
    };

    public PolicySpec ToContract() => new()
    {
        Name = Name,
        Kind = Kind,
        Description = Description,
        Selector = new PolicySelector
        {
            Hosts = [.. Hosts],
            Vms = [.. Vms],
            Labels = new SortedDictionary<string, string>(Labels, StringComparer.Ordinal),
        },
        Schedule = Cron is null ? null : new PolicySchedule(Cron, TimeZone),
        Retention = RetentionContract(),
        Target = Target,
        Quiesce = Quiesce,
        Verify = Verify,
        BandwidthBytesPerSecond = BandwidthBytesPerSecond,
        Concurrency = new PolicyConcurrency(PerHost, Fleet),
        Rpo = Rpo,
        TestRestore = TestRestoreContract(),
        Level = Level,
        FullEveryRuns = FullEveryRuns,
        FullEvery = FullEvery,
    };

    /// <summary>The retention counts (keep_last, hourly, daily, weekly, monthly) as the contract has them.</summary>
    public RetentionPolicy RetentionContract() => new(Retention[0], Retention[1], Retention[2], Retention[3], Retention[4]);

    /// <summary>Same policy content (what bumps the version when it differs).</summary>
    public bool SameAs(PolicySpecRecord other) =>
        Name == other.Name
        && Kind == other.Kind
        && Description == other.Description
        && Hosts.SequenceEqual(other.Hosts)
        && Vms.SequenceEqual(other.Vms)
        && Grains.Labels.SameEntries(Labels, other.Labels)
        && Cron == other.Cron
        && TimeZone == other.TimeZone
        && Retention.SequenceEqual(other.Retention)
        && Target == other.Target
        && Quiesce == other.Quiesce
        && Verify == other.Verify
        && BandwidthBytesPerSecond == other.BandwidthBytesPerSecond
        && PerHost == other.PerHost
        && Fleet == other.Fleet
        && Rpo == other.Rpo
        && TestProbe == other.TestProbe
        && TestEveryRuns == other.TestEveryRuns
        && TestEvery == other.TestEvery
        && TestRto == other.TestRto
        && TestTimeout == other.TestTimeout
        && Level == other.Level
        && FullEveryRuns == other.FullEveryRuns
        && FullEvery == other.FullEvery;
}

[GenerateSerializer]
[Alias("orchestrator.PolicyRunRecord")]
[MessagePackObject]
public sealed record class PolicyRunRecord
{
    [Id(0)]
    [Key(0)]
    public string RunId { get; set; } = "";

    [Id(1)]
    [Key(1)]
    public int PolicyVersion { get; set; }

    /// <summary>The spec the run uses from start to end (a later apply does not change a running run).</summary>
    [Id(2)]
    [Key(2)]
    public PolicySpecRecord Spec { get; set; } = new();

    [Id(3)]
    [Key(3)]
    public PolicyRunTrigger Trigger { get; set; }

    [Id(4)]
    [Key(4)]
    public string? RetryOf { get; set; }

    [Id(5)]
    [Key(5)]
    public PolicyRunState State { get; set; }

    [Id(6)]
    [Key(6)]
    public DateTimeOffset StartedAt { get; set; }

    [Id(7)]
    [Key(7)]
    public DateTimeOffset? EndedAt { get; set; }

    [Id(8)]
    [Key(8)]
    public List<PolicyTargetRecord> Targets { get; set; } = [];

    /// <summary>W3C traceparent of the span that started the run; a resumed run continues that trace.</summary>
    [Id(9)]
    [Key(9)]
    public string? TraceParent { get; set; }

    [Id(10)]
    [Key(10)]
    public long Version { get; set; }

    [Id(11)]
    [Key(11)]
    public string? Error { get; set; }

    /// <summary>
    /// The run's per-host parts (empty in runs written before parts existed: those keep every VM in
    /// <see cref="Targets"/>, which a run with parts leaves empty).
    /// </summary>
    [Id(12)]
    [Key(12)]
    public List<PolicyRunPartRecord> Parts { get; set; } = [];

    [IgnoreMember]
    public bool IsTerminal => State != PolicyRunState.Running;

    /// <summary>A run of the shape before per-host parts: its VMs are in <see cref="Targets"/>.</summary>
    [IgnoreMember]
    public bool HasInlineTargets => Parts.Count == 0 && Targets.Count > 0;
}

/// <summary>
/// One host's part of a run as the coordinator (the policy grain) keeps it: the budget it granted, the part's
/// outcome counts once it reported. <see cref="Granted"/> and <see cref="Returned"/> are cumulative totals, so
/// their messages are idempotent and may arrive in any order; the part holds <c>Granted - Returned</c> slots.
/// </summary>
[GenerateSerializer]
[Alias("orchestrator.PolicyRunPartRecord")]
[MessagePackObject]
public sealed record class PolicyRunPartRecord
{
    [Id(0)]
    [Key(0)]
    public string Host { get; set; } = "";

    [Id(1)]
    [Key(1)]
    public int TargetCount { get; set; }

    /// <summary>Fleet slots granted to the part so far (cumulative; persisted before the part is told).</summary>
    [Id(2)]
    [Key(2)]
    public int Granted { get; set; }

    /// <summary>Slots the part reported handing back (cumulative; the part persisted it before telling).</summary>
    [Id(3)]
    [Key(3)]
    public int Returned { get; set; }

    /// <summary>VMs the part still had waiting at its last report (where freed budget goes first).</summary>
    [Id(4)]
    [Key(4)]
    public int Waiting { get; set; }

    [Id(5)]
    [Key(5)]
    public bool Done { get; set; }

    [Id(6)]
    [Key(6)]
    public int Succeeded { get; set; }

    [Id(7)]
    [Key(7)]
    public int Failed { get; set; }

    [Id(8)]
    [Key(8)]
    public int Skipped { get; set; }

    /// <summary>
    /// The part's VMs until the part confirmed it stored them (then emptied): a coordinator that dies between
    /// writing the header and starting the part hands them over again.
    /// </summary>
    [Id(9)]
    [Key(9)]
    public List<PolicyTargetRecord> Handoff { get; set; } = [];

    /// <summary>The part's last change it reported (for watchers).</summary>
    [Id(10)]
    [Key(10)]
    public long Version { get; set; }

    /// <summary>Slots the part holds as far as the coordinator knows (counted against the fleet budget until it is done).</summary>
    [IgnoreMember]
    public int Held => Done ? 0 : Math.Max(0, Granted - Returned);
}

[GenerateSerializer]
[Alias("orchestrator.PolicyTargetRecord")]
[MessagePackObject]
public sealed record class PolicyTargetRecord
{
    [Id(0)]
    [Key(0)]
    public string Host { get; set; } = "";

    [Id(1)]
    [Key(1)]
    public string Vm { get; set; } = "";

    [Id(2)]
    [Key(2)]
    public PolicyTargetStatus Status { get; set; }

    /// <summary>The VM's backup run key (host/vm/b-...), persisted as soon as the VM admitted it.</summary>
    [Id(3)]
    [Key(3)]
    public string? BackupRun { get; set; }

    [Id(4)]
    [Key(4)]
    public string? Checkpoint { get; set; }

    [Id(5)]
    [Key(5)]
    public string? Reason { get; set; }

    [Id(6)]
    [Key(6)]
    public DateTimeOffset? AdmittedAt { get; set; }

    [Id(7)]
    [Key(7)]
    public DateTimeOffset? ReleasedAt { get; set; }

    [Id(8)]
    [Key(8)]
    public int Attempts { get; set; }

    /// <summary>A backup of an earlier run this target waits for first (a retry of a VM whose host died mid-backup).</summary>
    [Id(9)]
    [Key(9)]
    public string? CarriedBackupRun { get; set; }

    /// <summary>Not admitted before this time (the VM was busy).</summary>
    [Id(10)]
    [Key(10)]
    public DateTimeOffset? NotBefore { get; set; }

    /// <summary>First time the VM answered busy (Conflict) in this run.</summary>
    [Id(11)]
    [Key(11)]
    public DateTimeOffset? BusySince { get; set; }

    /// <summary>Skipped because its host's silo was down: run again when the host is back.</summary>
    [Id(12)]
    [Key(12)]
    public bool RetryWhenBack { get; set; }

    [IgnoreMember]
    public bool IsTerminal => Status is PolicyTargetStatus.Succeeded or PolicyTargetStatus.Failed or PolicyTargetStatus.Skipped;

    [IgnoreMember]
    public string Key => GrainKeys.Vm(Host, Vm);
}

[GenerateSerializer]
[Alias("orchestrator.PendingRetryRecord")]
[MessagePackObject]
public sealed record class PendingRetryRecord
{
    [Id(0)]
    [Key(0)]
    public string Host { get; set; } = "";

    [Id(1)]
    [Key(1)]
    public string Vm { get; set; } = "";

    [Id(2)]
    [Key(2)]
    public string FromRun { get; set; } = "";

    /// <summary>The backup the skipped target had started (recovery on its host may still finish it).</summary>
    [Id(3)]
    [Key(3)]
    public string? BackupRun { get; set; }

    [IgnoreMember]
    public string Key => GrainKeys.Vm(Host, Vm);
}
