using MessagePack;

namespace Orchestrator.Grains.VirtualMachines;

[GenerateSerializer]
[Alias("orchestrator.VirtualMachineState")]
[MessagePackObject]
public sealed record class VirtualMachineState
{
    /// <summary>False until inventory has seen the VM.</summary>
    [Id(0)]
    [Key(0)]
    public bool Known { get; set; }

    [Id(1)]
    [Key(1)]
    public Guid Uuid { get; set; }

    [Id(2)]
    [Key(2)]
    public VmPowerState PowerState { get; set; }

    [Id(3)]
    [Key(3)]
    public List<VmDiskRecord> Disks { get; set; } = [];

    [Id(4)]
    [Key(4)]
    public Dictionary<string, string> Labels { get; set; } = [];

    [Id(5)]
    [Key(5)]
    public long MemoryKiB { get; set; }

    [Id(6)]
    [Key(6)]
    public int VirtualCpus { get; set; }

    [Id(7)]
    [Key(7)]
    public DateTimeOffset FirstSeen { get; set; }

    [Id(8)]
    [Key(8)]
    public DateTimeOffset LastChanged { get; set; }

    /// <summary>False when the VM vanished from its host at a sync.</summary>
    [Id(9)]
    [Key(9)]
    public bool Present { get; set; }

    /// <summary>The one operation running on the VM (backup, checkpoint...), or null. Persisted: survives crashes.</summary>
    [Id(10)]
    [Key(10)]
    public VmOperation? Operation { get; set; }

    // Keys 20-39: internal checkpoints. Keys 40-59: live backups (41 retired: see LegacyBackupHistory).

    /// <summary>Checkpoints the orchestrator made (or adopted), oldest first. The hypervisor's list is the truth; this adds pause and origin.</summary>
    [Id(20)]
    [Key(20)]
    public List<CheckpointRecord> Checkpoints { get; set; } = [];

    /// <summary>The checkpoint schedule with its persisted next due time, or null.</summary>
    [Id(21)]
    [Key(21)]
    public CheckpointScheduleState? CheckpointSchedule { get; set; }

    /// <summary>The live-backup run in progress (not Completed or Failed), or null.</summary>
    [Id(40)]
    [Key(40)]
    public Backups.BackupRunState? ActiveBackup { get; set; }

    /// <summary>
    /// Retired as a live field (issue 11): finished runs, each with its domain XML, lived here and made every write of
    /// this state carry up to 50 of them. They now live in the "vm-history" state (<see cref="VmBackupHistoryState"/>,
    /// without XML: it is in each set's manifest). Still read, so state written by the old code is moved there on
    /// activation (history written first, then this list emptied); never written with runs again. Key 41 is never reused.
    /// </summary>
    [Id(41)]
    [Key(41)]
    public List<Backups.BackupRunState> LegacyBackupHistory { get; set; } = [];

    /// <summary>When the newest completed backup ended (compliance reads it without loading the history).</summary>
    [Id(42)]
    [Key(42)]
    public DateTimeOffset? LastCompletedBackupAt { get; set; }

    // Keys 60-69: test restores.

    /// <summary>
    /// The test restore in progress, persisted before its first side effect with the throwaway domain's name and every
    /// file it may create: a silo that dies mid-test destroys and deletes them on the next activation.
    /// </summary>
    [Id(60)]
    [Key(60)]
    public TestRestoreRecord? ActiveTest { get; set; }

    /// <summary>Finished test restores, the newest per backup run, newest last (at most <see cref="MaxTestResults"/>).</summary>
    [Id(61)]
    [Key(61)]
    public List<TestRestoreRecord> TestResults { get; set; } = [];

    /// <summary>The newest test restore that passed: the VM's last proven restore.</summary>
    [Id(62)]
    [Key(62)]
    public TestRestoreRecord? LastProvenRestore { get; set; }

    public const int MaxTestResults = 20;

    // Keys 80-89: incremental backups.

    /// <summary>
    /// The VM's incremental-backup chain (backup jobs with checkpoints): its newest checkpoint and that checkpoint's
    /// XML (to define it again when libvirt lost it), the newest set, or why the chain may not be used any more.
    /// </summary>
    [Id(80)]
    [Key(80)]
    public Backups.IncrementalChainState? IncrementalChain { get; set; }
}

/// <summary>A test restore: its throwaway resources while it runs, its result once it ended.</summary>
[GenerateSerializer]
[Alias("orchestrator.TestRestoreRecord")]
[MessagePackObject]
public sealed record class TestRestoreRecord
{
    [Id(0)]
    [Key(0)]
    public string Id { get; set; } = "";

    [Id(1)]
    [Key(1)]
    public string RunId { get; set; } = "";

    /// <summary>The throwaway domain (orch-test-VM-RUN).</summary>
    [Id(2)]
    [Key(2)]
    public string Domain { get; set; } = "";

    /// <summary>Every image and file the test may create (all deleted at the end, also after a crash).</summary>
    [Id(3)]
    [Key(3)]
    public List<string> Files { get; set; } = [];

    /// <summary>The probe in its text form (agent, console:REGEX, command:CMD).</summary>
    [Id(4)]
    [Key(4)]
    public string Probe { get; set; } = "agent";

    [Id(5)]
    [Key(5)]
    public double TimeoutSeconds { get; set; }

    [Id(6)]
    [Key(6)]
    public DateTimeOffset StartedAt { get; set; }

    [Id(7)]
    [Key(7)]
    public DateTimeOffset? EndedAt { get; set; }

    [Id(8)]
    [Key(8)]
    public TestRestoreOutcome Outcome { get; set; }

    [Id(9)]
    [Key(9)]
    public string Reason { get; set; } = "";

    [Id(10)]
    [Key(10)]
    public double RestoreSeconds { get; set; }

    /// <summary>From the start of the domain to the probe's answer.</summary>
    [Id(11)]
    [Key(11)]
    public double BootSeconds { get; set; }

    /// <summary>True once the domain is gone and every file deleted.</summary>
    [Id(12)]
    [Key(12)]
    public bool CleanedUp { get; set; }

    [Id(13)]
    [Key(13)]
    public string? Policy { get; set; }

    [Id(14)]
    [Key(14)]
    public string? TraceId { get; set; }

    /// <summary>The host the test runs on (its restore grain owns the throwaway VM); empty in records from before.</summary>
    [Id(15)]
    [Key(15)]
    public string Host { get; set; } = "";
}

/// <summary>What holds a VM's one-operation-at-a-time lock.</summary>
[GenerateSerializer]
[Alias("orchestrator.VmOperation")]
[MessagePackObject]
public sealed record class VmOperation
{
    /// <summary>"backup", "checkpoint-create", "checkpoint-revert", "checkpoint-delete"...</summary>
    [Id(0)]
    [Key(0)]
    public string Kind { get; set; } = "";

    [Id(1)]
    [Key(1)]
    public string Id { get; set; } = "";

    [Id(2)]
    [Key(2)]
    public DateTimeOffset StartedAt { get; set; }
}

[GenerateSerializer]
[Alias("orchestrator.VmDiskRecord")]
[MessagePackObject]
public sealed record class VmDiskRecord
{
    [Id(0)]
    [Key(0)]
    public string Target { get; set; } = "";

    [Id(1)]
    [Key(1)]
    public string SourcePath { get; set; } = "";

    [Id(2)]
    [Key(2)]
    public string Format { get; set; } = "";

    [Id(3)]
    [Key(3)]
    public int ChainDepth { get; set; }
}

/// <summary>What the orchestrator knows about one checkpoint beyond the hypervisor's own record.</summary>
[GenerateSerializer]
[Alias("orchestrator.CheckpointRecord")]
[MessagePackObject]
public sealed record class CheckpointRecord
{
    [Id(0)]
    [Key(0)]
    public string Name { get; set; } = "";

    [Id(1)]
    [Key(1)]
    public DateTimeOffset CreatedAt { get; set; }

    [Id(2)]
    [Key(2)]
    public bool WithMemory { get; set; }

    [Id(3)]
    [Key(3)]
    public CheckpointOrigin Origin { get; set; }

    /// <summary>How long the VM was paused; null when it was not running.</summary>
    [Id(4)]
    [Key(4)]
    public TimeSpan? Pause { get; set; }

    [Id(5)]
    [Key(5)]
    public PauseSource PauseSource { get; set; }

    [Id(6)]
    [Key(6)]
    public VmPowerState StateAtCheckpoint { get; set; }

    /// <summary>The whole hypervisor call.</summary>
    [Id(7)]
    [Key(7)]
    public TimeSpan? Duration { get; set; }

    /// <summary>The policy that made it (origin Policy); its retention prunes only its own checkpoints.</summary>
    [Id(8)]
    [Key(8)]
    public string? Policy { get; set; }

    /// <summary>The policy run that made it (origin Policy): a run resumed after a restart finds its own checkpoint by it.</summary>
    [Id(9)]
    [Key(9)]
    public string? PolicyRun { get; set; }
}

/// <summary>A VM's checkpoint schedule and where it stands. The due time lives here; reminders and timers only wake the grain.</summary>
[GenerateSerializer]
[Alias("orchestrator.CheckpointScheduleState")]
[MessagePackObject]
public sealed record class CheckpointScheduleState
{
    [Id(0)]
    [Key(0)]
    public string Cron { get; set; } = "";

    [Id(1)]
    [Key(1)]
    public string TimeZone { get; set; } = "UTC";

    [Id(2)]
    [Key(2)]
    public TimeSpan Jitter { get; set; }

    [Id(3)]
    [Key(3)]
    public int KeepLast { get; set; }

    [Id(4)]
    [Key(4)]
    public int Hourly { get; set; }

    [Id(5)]
    [Key(5)]
    public int Daily { get; set; }

    [Id(6)]
    [Key(6)]
    public int Weekly { get; set; }

    [Id(7)]
    [Key(7)]
    public int Monthly { get; set; }

    /// <summary>When the next scheduled checkpoint is due (occurrence + this VM's jitter offset).</summary>
    [Id(8)]
    [Key(8)]
    public DateTimeOffset NextDueAt { get; set; }

    [Id(9)]
    [Key(9)]
    public DateTimeOffset UpdatedAt { get; set; }

    [Id(10)]
    [Key(10)]
    public int Runs { get; set; }

    [Id(11)]
    [Key(11)]
    public ScheduledRunRecord? LastRun { get; set; }

    /// <summary>The latest runs, newest first (at most <see cref="RecentRunsKept"/>; the first is <see cref="LastRun"/>).</summary>
    [Id(12)]
    [Key(12)]
    public List<ScheduledRunRecord> RecentRuns { get; set; } = [];

    public const int RecentRunsKept = 10;

    public void Record(ScheduledRunRecord run)
    {
        LastRun = run;
        Runs++;
        RecentRuns.Insert(0, run);
        if (RecentRuns.Count > RecentRunsKept)
        {
            RecentRuns.RemoveRange(RecentRunsKept, RecentRuns.Count - RecentRunsKept);
        }
    }
}

[GenerateSerializer]
[Alias("orchestrator.ScheduledRunRecord")]
[MessagePackObject]
public sealed record class ScheduledRunRecord
{
    [Id(0)]
    [Key(0)]
    public DateTimeOffset At { get; set; }

    /// <summary>The due time this run served.</summary>
    [Id(1)]
    [Key(1)]
    public DateTimeOffset DueAt { get; set; }

    /// <summary>The checkpoint taken, or null when the run failed or was skipped.</summary>
    [Id(2)]
    [Key(2)]
    public string? Checkpoint { get; set; }

    /// <summary>Due times that passed while nothing ran (silo down): caught up by this one run, not run one by one.</summary>
    [Id(3)]
    [Key(3)]
    public int SkippedSlots { get; set; }

    [Id(4)]
    [Key(4)]
    public string? Error { get; set; }

    [Id(5)]
    [Key(5)]
    public List<string> Pruned { get; set; } = [];
}
