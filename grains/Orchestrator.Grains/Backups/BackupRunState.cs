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

    /// <summary>Live (overlays) or offline (a shut-off VM's images copied as they are); an offline run whose VM started during the copy goes on live.</summary>
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

    [IgnoreMember]
    public bool IsTerminal => Step is BackupStep.Completed or BackupStep.Failed;
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
    [IgnoreMember]
    public string BackupFormat => BackingChain.Count > 0 ? "qcow2" : Format;
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
