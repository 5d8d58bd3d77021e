using MessagePack;
using Orchestrator.Grains.Disks;

namespace Orchestrator.Grains.Backups;

/// <summary>One live-backup run, persisted before and after every side effect.</summary>
[GenerateSerializer]
[Alias("orchestrator.BackupRunState")]
[MessagePackObject]
public sealed record class BackupRunState
{
    [Id(0)]
    [Key(0)]
    public string RunId { get; set; } = "";

    [Id(1)]
    [Key(1)]
    public BackupStep Step { get; set; }

    /// <summary>A failure after the overlays existed: the run commits back and cleans up, then ends Failed.</summary>
    [Id(2)]
    [Key(2)]
    public bool RollingBack { get; set; }

    [Id(3)]
    [Key(3)]
    public string? Error { get; set; }

    [Id(4)]
    [Key(4)]
    public DateTimeOffset StartedAt { get; set; }

    [Id(5)]
    [Key(5)]
    public DateTimeOffset? EndedAt { get; set; }

    /// <summary>Directory of this run's backup set (images + manifest).</summary>
    [Id(6)]
    [Key(6)]
    public string BackupSetPath { get; set; } = "";

    [Id(7)]
    [Key(7)]
    public List<BackupDiskState> Disks { get; set; } = [];

    [Id(8)]
    [Key(8)]
    public List<BackupStepEntry> Steps { get; set; } = [];

    [Id(9)]
    [Key(9)]
    public QuiesceMode Quiesce { get; set; }

    [Id(10)]
    [Key(10)]
    public bool Verify { get; set; }

    [Id(11)]
    [Key(11)]
    public long BandwidthBytesPerSecond { get; set; }

    [Id(12)]
    [Key(12)]
    public double FreezeBudgetMilliseconds { get; set; }

    [Id(13)]
    [Key(13)]
    public int[]? Retention { get; set; }

    /// <summary>"off", "frozen", "agent unavailable: ... (crash-consistent)".</summary>
    [Id(14)]
    [Key(14)]
    public string QuiesceOutcome { get; set; } = "off";

    [Id(15)]
    [Key(15)]
    public double FreezeMilliseconds { get; set; }

    /// <summary>W3C traceparent of the span that admitted the run, so a resumed run links to its trace.</summary>
    [Id(16)]
    [Key(16)]
    public string? TraceParent { get; set; }

    /// <summary>Grows with every persisted change (clients watch it).</summary>
    [Id(17)]
    [Key(17)]
    public long Version { get; set; }

    [Id(18)]
    [Key(18)]
    public string? Policy { get; set; }

    [Id(19)]
    [Key(19)]
    public int PolicyVersion { get; set; }

    /// <summary>The domain XML when the run was admitted (goes into the manifest; restore defines from it).</summary>
    [Id(20)]
    [Key(20)]
    public string DomainXml { get; set; } = "";

    /// <summary>How often the overlay creation was retried after a crash.</summary>
    [Id(21)]
    [Key(21)]
    public int OverlayAttempts { get; set; }

    [Id(22)]
    [Key(22)]
    public Guid VmUuid { get; set; }

    /// <summary>Total time the guest was paused during the run, from its own Suspended/Resumed events (0 = never).</summary>
    [Id(23)]
    [Key(23)]
    public double PausedMilliseconds { get; set; }

    /// <summary>The policy run that dispatched this backup (lets a resumed policy run find it instead of starting another).</summary>
    [Id(24)]
    [Key(24)]
    public string? PolicyRun { get; set; }

    /// <summary>
    /// Live (overlays), offline (a shut-off VM's images copied as they are; one whose VM started during the copy goes on
    /// live) or a backup job (checkpoints and dirty bitmaps: full or incremental).
    /// </summary>
    [Id(30)]
    [Key(30)]
    public BackupMethod Method { get; set; }

    /// <summary>Offline copies begun (a copy the VM's start interrupted is discarded and begun again, a bounded number of times).</summary>
    [Id(31)]
    [Key(31)]
    public int OfflineAttempts { get; set; }

    /// <summary>Failed tries of a commit or clean-up step (counted across restarts against the retry budget).</summary>
    [Id(40)]
    [Key(40)]
    public int FinishAttempts { get; set; }

    /// <summary>When the commit or clean-up step first failed (the time side of the retry budget).</summary>
    [Id(41)]
    [Key(41)]
    public DateTimeOffset? FinishFailingSince { get; set; }

    /// <summary>Backup-job runs: <c>full</c> or <c>incremental</c>.</summary>
    [Id(51)]
    [Key(51)]
    public string? Level { get; set; }

    /// <summary>An incremental's parent run (its run id): the set its images are backed by.</summary>
    [Id(52)]
    [Key(52)]
    public string? ParentRunId { get; set; }

    /// <summary>An incremental's parent set directory.</summary>
    [Id(53)]
    [Key(53)]
    public string? ParentSetPath { get; set; }

    /// <summary>Why the level is what it is (a full asked for as incremental says why the chain could not be used).</summary>
    [Id(54)]
    [Key(54)]
    public string? LevelReason { get; set; }

    /// <summary>The checkpoint this run creates with its job (deterministic: <c>orch-&lt;run id&gt;</c>).</summary>
    [Id(55)]
    [Key(55)]
    public string? Checkpoint { get; set; }

    /// <summary>An incremental's parent checkpoint (the changes since it are copied).</summary>
    [Id(56)]
    [Key(56)]
    public string? ParentCheckpoint { get; set; }

    /// <summary>Bytes libvirt counted for the job (the data it copied).</summary>
    [Id(57)]
    [Key(57)]
    public long JobBytes { get; set; }

    /// <summary>The chain this run is part of had this many runs before it (0 for a full).</summary>
    [Id(58)]
    [Key(58)]
    public int ChainIndex { get; set; }

    [IgnoreMember]
    public bool IsBackupJob => Method == BackupMethod.BackupJob;

    [IgnoreMember]
    public bool IsTerminal => Step is BackupStep.Completed or BackupStep.Failed;
}

/// <summary>The levels of a backup-job run.</summary>
public static class BackupLevels
{
    public const string Full = "full";
    public const string Incremental = "incremental";
}

[GenerateSerializer]
[Alias("orchestrator.BackupDiskState")]
[MessagePackObject]
public sealed record class BackupDiskState
{
    [Id(0)]
    [Key(0)]
    public string Target { get; set; } = "";

    /// <summary>The image that becomes read-only under the overlay, and is copied.</summary>
    [Id(1)]
    [Key(1)]
    public string BasePath { get; set; } = "";

    [Id(2)]
    [Key(2)]
    public string Format { get; set; } = "";

    /// <summary>Deterministic: <c>&lt;base dir&gt;/&lt;base name&gt;.orch-&lt;runId&gt;.qcow2</c>.</summary>
    [Id(3)]
    [Key(3)]
    public string OverlayPath { get; set; } = "";

    [Id(4)]
    [Key(4)]
    public string BackupPath { get; set; } = "";

    [Id(5)]
    [Key(5)]
    public long BytesTotal { get; set; }

    [Id(6)]
    [Key(6)]
    public long BytesCopied { get; set; }

    [Id(7)]
    [Key(7)]
    public string? Sha256 { get; set; }

    [Id(8)]
    [Key(8)]
    public bool Copied { get; set; }

    [Id(9)]
    [Key(9)]
    public bool Committed { get; set; }

    [Id(10)]
    [Key(10)]
    public bool Verified { get; set; }

    [Id(11)]
    [Key(11)]
    public long VirtualSize { get; set; }

    /// <summary>
    /// The copy's data digest taken while copying (non-zero 4 KiB blocks only: cheap however large and empty the
    /// disk); the full <see cref="Sha256"/> is read back from the copy after the overlays are gone, and the data
    /// digest read back with it must match this one.
    /// </summary>
    [Id(12)]
    [Key(12)]
    public string? DataSha256 { get; set; }

    /// <summary>
    /// The images below <see cref="BasePath"/> when the run started, top to bottom, with their formats (from the domain
    /// XML, never probed). The commit must leave the disk on <see cref="BasePath"/> over exactly this chain; a disk with
    /// a chain is copied flattened into one standalone image.
    /// </summary>
    [Id(13)]
    [Key(13)]
    public List<ChainLayerRecord> BackingChain { get; set; } = [];

    /// <summary>
    /// The copy's format: a chain is flattened into qcow2 (the top of a chain is qcow2 anyway; qcow2 stays sparse on any
    /// target); a single image keeps its own format.
    /// </summary>
    /// <summary>
    /// Backup-job runs: <c>full</c> or <c>incremental</c> for this disk (a raw disk cannot hold a bitmap: always full).
    /// </summary>
    [Id(20)]
    [Key(20)]
    public string? Level { get; set; }

    /// <summary>An incremental image's backing file as written into its header (relative to the set), and its format.</summary>
    [Id(21)]
    [Key(21)]
    public string? BackingFile { get; set; }

    [Id(22)]
    [Key(22)]
    public string? BackingFormat { get; set; }

    /// <summary>Why this disk's level is what it is (raw: no bitmap).</summary>
    [Id(23)]
    [Key(23)]
    public string? LevelNote { get; set; }

    /// <summary>The copy's own format: backup-job copies are qcow2 for qcow2 disks, raw for raw disks.</summary>
    [Id(24)]
    [Key(24)]
    public string? TargetFormat { get; set; }

    [IgnoreMember]
    public string BackupFormat => TargetFormat ?? (BackingChain.Count > 0 ? "qcow2" : Format);
}

[GenerateSerializer]
[Alias("orchestrator.BackupStepEntry")]
[MessagePackObject]
public sealed record class BackupStepEntry
{
    [Id(0)]
    [Key(0)]
    public BackupStep Step { get; set; }

    [Id(1)]
    [Key(1)]
    public DateTimeOffset At { get; set; }

    [Id(2)]
    [Key(2)]
    public string? Note { get; set; }
}
