using Orleans.Concurrency;

namespace Orchestrator;

/// <summary>Filesystem freeze through the QEMU guest agent before the overlays are created.</summary>
public enum QuiesceMode
{
    /// <summary>No freeze: a crash-consistent backup.</summary>
    Off = 0,

    /// <summary>Freeze when the guest agent answers; otherwise go on crash-consistent and record why.</summary>
    Try = 1,

    /// <summary>Freeze or fail before touching the disks.</summary>
    Required = 2,
}

/// <summary>Steps of the live-backup state machine, in order.</summary>
public enum BackupStep
{
    Admitted = 0,
    Preflight = 1,

    /// <summary>Intent persisted: freeze (optional) and create the overlays with their deterministic names.</summary>
    Quiesce = 2,
    OverlayActive = 3,
    Copying = 4,
    Committing = 5,
    Cleaning = 6,
    Verifying = 7,
    Completed = 8,
    Failed = 9,

    /// <summary>
    /// Waiting for one of its silo's backup slots (Orchestrator:Backup:MaxConcurrentPerSilo) before it touches the VM;
    /// shown while it waits, never the step a run ends in.
    /// </summary>
    Queued = 10,
}

/// <summary>
/// How a run copies the VM's disks: live (external-snapshot overlays, then commit; a running or paused VM, which keeps
/// its state) or offline (a shut-off VM: its images copied as they are, while it is watched to stay off).
/// </summary>
public enum BackupMethod
{
    Live = 0,
    Offline = 1,

    /// <summary>A libvirt push-mode backup job with a checkpoint: a full, or an incremental (dirty bitmaps).</summary>
    BackupJob = 2,
}

public static class BackupMethodNames
{
    /// <summary>The method's name in the API, JSON and manifests: <c>live</c>, <c>offline</c> or <c>backup-job</c>.</summary>
    public static string Name(this BackupMethod method) => method switch
    {
        BackupMethod.Offline => "offline",
        BackupMethod.BackupJob => "backup-job",
        _ => "live",
    };
}

[GenerateSerializer]
[Alias("orchestrator.BackupRetention")]
public sealed record BackupRetention(
    [property: Id(0)] int KeepLast,
    [property: Id(1)] int KeepDaily = 0,
    [property: Id(2)] int KeepWeekly = 0,
    [property: Id(3)] int KeepMonthly = 0);

[GenerateSerializer]
[Alias("orchestrator.BackupRequest")]
public sealed record BackupRequest
{
    /// <summary>Directory that receives the backup set (must lie under a configured backup root); null = the default target.</summary>
    [Id(0)]
    public string? Target { get; init; }

    [Id(1)]
    public QuiesceMode Quiesce { get; init; } = QuiesceMode.Off;

    /// <summary>Check the copies (qemu-img check + checksum re-read) before calling the run completed.</summary>
    [Id(2)]
    public bool Verify { get; init; } = true;

    /// <summary>Copy bandwidth limit in bytes per second; 0 is unlimited.</summary>
    [Id(3)]
    public long BandwidthBytesPerSecond { get; init; }

    [Id(4)]
    public BackupRetention? Retention { get; init; }

    /// <summary>Longest a guest may stay frozen.</summary>
    [Id(5)]
    public TimeSpan FreezeBudget { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Policy that asked for the run and its version, when a policy did.</summary>
    [Id(6)]
    public string? Policy { get; init; }

    [Id(7)]
    public int PolicyVersion { get; init; }

    /// <summary>The policy run that dispatched this backup, when one did (lets a resumed policy run find it).</summary>
    [Id(8)]
    public string? PolicyRun { get; init; }

    /// <summary>
    /// Back up with a libvirt backup job and checkpoints (dirty bitmaps) instead of overlays: an incremental when a
    /// valid chain exists, otherwise a full with the reason recorded. False: the overlay method, unchanged.
    /// </summary>
    [Id(9)]
    public bool Incremental { get; init; }

    /// <summary>
    /// With <see cref="Incremental"/>: take a full when the chain already holds this many runs (the full counted); 0 = no limit.
    /// </summary>
    [Id(10)]
    public int FullEveryRuns { get; init; }

    /// <summary>With <see cref="Incremental"/>: take a full when the chain's full is older than this; null = no limit.</summary>
    [Id(11)]
    public TimeSpan? FullEveryAge { get; init; }
}

[GenerateSerializer]
[Alias("orchestrator.BackupDiskView")]
public sealed record BackupDiskView(
    [property: Id(0)] string Target,
    [property: Id(1)] string BasePath,
    [property: Id(2)] string Format,
    [property: Id(3)] string OverlayPath,
    [property: Id(4)] string BackupPath,
    [property: Id(5)] long BytesTotal,
    [property: Id(6)] long BytesCopied,
    [property: Id(7)] string? Sha256,
    [property: Id(8)] bool Committed,
    [property: Id(9)] bool Verified);

[GenerateSerializer]
[Alias("orchestrator.BackupStepRecord")]
public sealed record BackupStepRecord(
    [property: Id(0)] BackupStep Step,
    [property: Id(1)] DateTimeOffset At,
    [property: Id(2)] string? Note);

/// <summary>A live-backup run as clients see it. <see cref="Version"/> grows with every change (for watching).</summary>
[GenerateSerializer]
[Alias("orchestrator.BackupRunView")]
public sealed record BackupRunView(
    [property: Id(0)] string RunKey,
    [property: Id(1)] string Host,
    [property: Id(2)] string Vm,
    [property: Id(3)] BackupStep Step,
    [property: Id(4)] bool RollingBack,
    [property: Id(5)] string? Error,
    [property: Id(6)] DateTimeOffset StartedAt,
    [property: Id(7)] DateTimeOffset? EndedAt,
    [property: Id(8)] string BackupSetPath,
    [property: Id(9)] IReadOnlyList<BackupDiskView> Disks,
    [property: Id(10)] IReadOnlyList<BackupStepRecord> Steps,
    [property: Id(11)] string QuiesceOutcome,
    [property: Id(12)] double FreezeMilliseconds,
    [property: Id(13)] string? TraceId,
    [property: Id(14)] long Version,
    [property: Id(15)] string? Policy,
    [property: Id(16)] int PolicyVersion,
    [property: Id(17)] string? PolicyRun = null,
    [property: Id(18)] TestRestoreView? LastTest = null,
    [property: Id(19)] string? Level = null,
    [property: Id(20)] string? Parent = null,
    [property: Id(21)] string? LevelReason = null,
    [property: Id(30)] BackupMethod Method = BackupMethod.Live)
{
    public bool IsTerminal => Step is BackupStep.Completed or BackupStep.Failed;
}

[GenerateSerializer]
[Alias("orchestrator.RestoreRequest")]
public sealed record RestoreRequest(
    [property: Id(0)] string RunKey,
    [property: Id(1)] string NewName,
    [property: Id(2)] bool Define,
    [property: Id(3)] string? ImageDirectory = null,
    [property: Id(4)] string? Host = null,
    [property: Id(5)] bool Start = false)
{
    /// <summary>The host the restore runs on: the one asked for, else the run's own.</summary>
    public string TargetHost => string.IsNullOrEmpty(Host) ? GrainKeys.HostOf(RunKey) : Host;
}

[GenerateSerializer]
[Alias("orchestrator.RestoreResult")]
public sealed record RestoreResult(
    [property: Id(0)] string NewName,
    [property: Id(1)] IReadOnlyList<string> Images,
    [property: Id(2)] bool Defined,
    [property: Id(3)] Guid? Uuid,
    [property: Id(4)] IReadOnlyList<string>? Changes = null,
    [property: Id(5)] string? Host = null,
    [property: Id(6)] bool Started = false);

/// <summary>Live backups of one VM (implemented by the VM grain).</summary>
[Alias("orchestrator.IBackupOperations")]
public interface IBackupOperations : IGrainWithStringKey
{
    /// <summary>Admits a backup run (persisted) and starts it in the background; returns the admitted run.</summary>
    [Alias("StartBackup")]
    Task<BackupRunView> StartBackupAsync(BackupRequest request, CancellationToken cancellationToken = default);

    [AlwaysInterleave]
    [Alias("GetBackup")]
    Task<BackupRunView> GetBackupAsync(string runId, CancellationToken cancellationToken = default);

    [AlwaysInterleave]
    [Alias("ListBackups")]
    Task<IReadOnlyList<BackupRunView>> ListBackupsAsync(CancellationToken cancellationToken = default);

    /// <summary>Returns the run once its version is above <paramref name="afterVersion"/>, or after <paramref name="maxWait"/>.</summary>
    [AlwaysInterleave]
    [Alias("WaitBackup")]
    Task<BackupRunView> WaitBackupAsync(string runId, long afterVersion, TimeSpan maxWait, CancellationToken cancellationToken = default);

    /// <summary>
    /// Returns the run once it ended (Completed or Failed), or after <paramref name="maxWait"/>: one call per backup for
    /// a caller that needs only its end (a policy run), where <see cref="WaitBackupAsync"/> answers every change.
    /// </summary>
    [AlwaysInterleave]
    [Alias("WaitBackupEnd")]
    Task<BackupRunView> WaitBackupEndAsync(string runId, TimeSpan maxWait, CancellationToken cancellationToken = default);

    /// <summary>Compares persisted workflow state with the real chain and finishes or rolls back (also runs on activation and periodically).</summary>
    [Alias("ReconcileBackups")]
    Task ReconcileBackupsAsync(CancellationToken cancellationToken = default);

    [Alias("Restore")]
    Task<RestoreResult> RestoreAsync(RestoreRequest request, CancellationToken cancellationToken = default);

    /// <summary>
    /// Commits back the backup overlays a run left in place when it gave up (its commit kept failing): each disk
    /// running on an overlay that one of this VM's recorded runs created, over exactly the base and chain that run
    /// recorded. Anything else is refused and left as it is. Takes the VM's operation lock.
    /// </summary>
    [Alias("RepairOverlays")]
    Task<IReadOnlyList<OverlayRepair>> RepairOverlaysAsync(bool dryRun, CancellationToken cancellationToken = default);
}

/// <summary>What <c>backup repair</c> did (or, in a dry run, would do) with one disk running on a backup overlay.</summary>
[GenerateSerializer]
[Alias("orchestrator.OverlayRepair")]
public sealed record OverlayRepair(
    [property: Id(0)] string Target,
    [property: Id(1)] string OverlayPath,
    [property: Id(2)] string? BasePath,
    [property: Id(3)] string? RunId,
    [property: Id(4)] OverlayRepairAction Action,
    [property: Id(5)] string Reason);

public enum OverlayRepairAction
{
    /// <summary>Committed into its recorded base, pivoted (or redefined when the VM is off) and deleted.</summary>
    Committed = 0,

    /// <summary>Dry run: would be committed.</summary>
    WouldCommit = 1,

    /// <summary>Not ours to touch or not as recorded: left exactly as it is, with the reason.</summary>
    Refused = 2,
}

/// <summary>
/// Restores backup sets on one host (key: the target host name; lives on that host's silo). Everything comes from the
/// set itself (found under the host's configured backup roots by the backup layout, its manifest checked), never from
/// the source VM's grain: a set made on another host restores while that host's silo is down.
/// </summary>
[Alias("orchestrator.IHostRestoreGrain")]
public interface IHostRestoreGrain : IGrainWithStringKey
{
    [Alias("Restore")]
    Task<RestoreResult> RestoreAsync(RestoreRequest request, CancellationToken cancellationToken = default);

    /// <summary>
    /// Verifies the backup set of <paramref name="runKey"/> as found under this host's roots and, for an incremental,
    /// every set it builds on (manifests, SHA-256 of every image, headers' backing, the chain's links); writes nothing.
    /// </summary>
    [Alias("Verify")]
    Task<BackupVerifyResult> VerifyAsync(string runKey, CancellationToken cancellationToken = default);
}

/// <summary>What <c>backup verify</c> found: each set of the chain, the asked-for one first, the full last.</summary>
[GenerateSerializer]
[Alias("orchestrator.BackupVerifyResult")]
public sealed record BackupVerifyResult(
    [property: Id(0)] string Key,
    [property: Id(1)] string Host,
    [property: Id(2)] bool Passed,
    [property: Id(3)] IReadOnlyList<VerifiedSet> Sets);

/// <summary>One set as verified: what was checked, whether it passed, and why not.</summary>
[GenerateSerializer]
[Alias("orchestrator.VerifiedSet")]
public sealed record VerifiedSet(
    [property: Id(0)] string Run,
    [property: Id(1)] string? SetPath,
    [property: Id(2)] string? Level,
    [property: Id(3)] int? ChainIndex,
    [property: Id(4)] bool Passed,
    [property: Id(5)] IReadOnlyList<string> Checks,
    [property: Id(6)] string? Error);

/// <summary>Run keys: <c>host/vm/runId</c>.</summary>
public static class BackupRunKeys
{
    public static string Of(string host, string vm, string runId) => $"{host}/{vm}/{runId}";

    public static (string Host, string Vm, string RunId) Parse(string? key, string field = "run")
    {
        if (string.IsNullOrWhiteSpace(key))
        {
            throw OrchestratorException.InvalidArgument(field, "a run key of the form HOST/VM/RUN is required");
        }

        var slash = key.LastIndexOf('/');
        if (key.Length > GrainKeys.MaxKeyLength || slash <= 0 || slash == key.Length - 1)
        {
            throw OrchestratorException.InvalidArgument(field, $"{OrchestratorException.Quote(key)} is not of the form HOST/VM/RUN (at most {GrainKeys.MaxKeyLength} characters)");
        }

        var (host, vm) = GrainKeys.ParseVm(key[..slash], field);
        var run = key[(slash + 1)..];
        if (!run.StartsWith("b-", StringComparison.Ordinal) || run.Length > 64 || !run.All(c => char.IsAsciiLetterOrDigit(c) || c == '-'))
        {
            throw OrchestratorException.InvalidArgument(field, $"{OrchestratorException.Quote(run)} is not a backup run id (b-...)");
        }

        return (host, vm, run);
    }
}
