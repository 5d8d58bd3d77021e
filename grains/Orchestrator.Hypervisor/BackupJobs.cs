namespace Orchestrator.Hypervisor;

/// <summary>
/// Where one disk's copy goes in a backup job: a new file the job creates, in the format named. <paramref name="Full"/>:
/// this disk is copied whole even in an incremental job (libvirt's per-disk backupmode='full'), as a raw disk, which
/// cannot hold a dirty bitmap, must be.
/// </summary>
public sealed record BackupJobDisk(string Target, string TargetPath, string TargetFormat, bool Full = false);

/// <summary>
/// A push-mode backup job (libvirt's virDomainBackupBegin): QEMU itself copies the disks of the running domain, as they
/// were at the instant the job started, into new files, while the guest keeps running and writing. Disks of the domain
/// not listed are not copied.
/// </summary>
/// <param name="Disks">The disks to copy, each into its own new file.</param>
/// <param name="Incremental">
/// Null for a full copy; otherwise the checkpoint to copy the changes since: only the clusters the guest wrote after
/// that checkpoint are written into the (qcow2) targets, every disk listed must have that checkpoint's bitmap.
/// </param>
/// <param name="NewCheckpoint">
/// A checkpoint created atomically with the job's start (its bitmaps record every write after this instant), or null.
/// </param>
/// <param name="CheckpointDisks">The disks that get a bitmap in <paramref name="NewCheckpoint"/> (qcow2 only).</param>
public sealed record BackupJobSpec(
    IReadOnlyList<BackupJobDisk> Disks,
    string? Incremental = null,
    string? NewCheckpoint = null,
    IReadOnlyList<string>? CheckpointDisks = null);

public enum BackupJobState
{
    /// <summary>No backup job ran on the domain since the last look (or libvirt kept no record of it).</summary>
    None = 0,
    Running = 1,
    Completed = 2,
    Failed = 3,
    Cancelled = 4,
}

/// <summary>A backup job's state; bytes as libvirt counts them (the data it copies, holes and unchanged clusters not).</summary>
public sealed record BackupJobStatus(BackupJobState State, long BytesProcessed, long BytesTotal, string? Error = null)
{
    public static readonly BackupJobStatus None = new(BackupJobState.None, 0, 0);

    public bool Ended => State is BackupJobState.Completed or BackupJobState.Failed or BackupJobState.Cancelled;
}

/// <summary>One disk of a checkpoint: the dirty bitmap that tracks it, or null when the checkpoint does not track it.</summary>
public sealed record CheckpointDisk(string Target, string? Bitmap);

/// <summary>A libvirt checkpoint (virDomainCheckpoint): a named point from which the writes of tracked disks are known.</summary>
public sealed record CheckpointInfo(string Name, string? Parent, DateTimeOffset CreatedAt, IReadOnlyList<CheckpointDisk> Disks)
{
    /// <summary>The checkpoint's whole XML as libvirt gives it (with the domain definition), to redefine it later.</summary>
    public string Xml { get; init; } = string.Empty;
}
