namespace Orchestrator.Hypervisor;

/// <summary>
/// One connection to one hypervisor host. Every method is thread-safe. Errors surface as
/// <see cref="HypervisorException"/> with a <see cref="HypervisorErrorKind"/> (and libvirt's own code and message
/// where there is one).
/// </summary>
public interface IHypervisor : IAsyncDisposable
{
    /// <summary>The connection URI (qemu:///system, test:///default, simulated://name).</summary>
    string Uri { get; }

    /// <summary>Disk image operations on this host (qemu-img where libvirt has no API).</summary>
    IDiskImages Images { get; }

    /// <summary>Raised on the driver's event thread; handlers must be quick and must not throw.</summary>
    event EventHandler<DomainEvent>? DomainEvent;

    Task<HypervisorFacts> GetFactsAsync(CancellationToken cancellationToken = default);

    /// <summary>The host machine's memory, free memory and CPUs now.</summary>
    Task<NodeCapacity> GetCapacityAsync(CancellationToken cancellationToken = default);

    Task<IReadOnlyList<DomainInfo>> ListDomainsAsync(CancellationToken cancellationToken = default);

    /// <summary>The domain by name; <see cref="HypervisorErrorKind.DomainNotFound"/> when it does not exist.</summary>
    Task<DomainInfo> GetDomainAsync(string domain, CancellationToken cancellationToken = default);

    Task<string> GetDomainXmlAsync(string domain, bool inactive = false, CancellationToken cancellationToken = default);

    /// <summary>Defines (or redefines) a persistent domain from XML; returns its name.</summary>
    Task<string> DefineDomainAsync(string xml, CancellationToken cancellationToken = default);

    Task UndefineDomainAsync(string domain, CancellationToken cancellationToken = default);

    Task StartDomainAsync(string domain, bool paused = false, CancellationToken cancellationToken = default);

    /// <summary>Hard power-off (virDomainDestroy).</summary>
    Task DestroyDomainAsync(string domain, CancellationToken cancellationToken = default);

    Task SuspendDomainAsync(string domain, CancellationToken cancellationToken = default);

    Task ResumeDomainAsync(string domain, CancellationToken cancellationToken = default);

    /// <summary>
    /// Disk-only external snapshot of the given disks, atomically, without snapshot metadata. Each overlay is a new
    /// qcow2 file backed by the disk's current image. <see cref="HypervisorErrorKind.FileExists"/> when an overlay
    /// path exists already.
    /// </summary>
    Task CreateExternalSnapshotAsync(string domain, IReadOnlyList<OverlaySpec> overlays, CancellationToken cancellationToken = default);

    /// <summary>The block job on a disk, or null when there is none.</summary>
    Task<BlockJobInfo?> GetBlockJobAsync(string domain, string target, CancellationToken cancellationToken = default);

    /// <summary>
    /// Starts an active block commit of the disk's top image into <paramref name="basePath"/>, which must be the image
    /// right below it (<see cref="HypervisorErrorKind.InvalidArgument"/> otherwise): exactly one layer is merged, never
    /// deeper into a chain that other disks may share. Null is libvirt's own default, the DEEPEST image of the chain
    /// (everything above it merged into it): kept only so the drivers model libvirt exactly; a backup never passes it.
    /// </summary>
    Task StartActiveCommitAsync(string domain, string target, string? basePath, long bandwidthBytesPerSecond = 0, CancellationToken cancellationToken = default);

    /// <summary>Completes when the disk's block job is READY (by event; returns at once when it already is).</summary>
    Task WaitForBlockJobReadyAsync(string domain, string target, CancellationToken cancellationToken = default);

    /// <summary>Pivots a READY active commit and completes when libvirt reports the job COMPLETED.</summary>
    Task PivotAsync(string domain, string target, CancellationToken cancellationToken = default);

    /// <summary>Aborts the disk's block job (without pivot) and completes when it is gone.</summary>
    Task AbortBlockJobAsync(string domain, string target, CancellationToken cancellationToken = default);

    /// <summary>
    /// Internal snapshot: disk + memory for a running domain, disk only for a shut-off one. Refused with
    /// <see cref="HypervisorErrorKind.UnsupportedDiskFormat"/> when any disk is not qcow2.
    /// </summary>
    Task<InternalSnapshotInfo> CreateInternalSnapshotAsync(string domain, string name, string? description = null, CancellationToken cancellationToken = default);

    Task<IReadOnlyList<InternalSnapshotInfo>> ListInternalSnapshotsAsync(string domain, CancellationToken cancellationToken = default);

    Task RevertInternalSnapshotAsync(string domain, string name, RevertTarget target = RevertTarget.AsSaved, CancellationToken cancellationToken = default);

    Task DeleteInternalSnapshotAsync(string domain, string name, CancellationToken cancellationToken = default);

    /// <summary>Freezes guest file systems through the QEMU guest agent; returns how many were frozen.</summary>
    Task<int> FreezeFileSystemsAsync(string domain, CancellationToken cancellationToken = default);

    Task<int> ThawFileSystemsAsync(string domain, CancellationToken cancellationToken = default);

    /// <summary>
    /// Starts a push-mode backup job on a running domain (virDomainBackupBegin) and returns once it runs; watch it with
    /// <see cref="GetBackupJobAsync"/>. Refused: a shut-off domain (InvalidDomainState), a target file that exists
    /// (FileExists), an unknown disk (DiskNotFound), an incremental from a checkpoint the domain does not have
    /// (CheckpointNotFound), a new checkpoint whose name exists (CheckpointExists), a bitmap on a raw disk
    /// (UnsupportedDiskFormat), another job on the domain (JobActive). The target of an incremental copy is a qcow2 file
    /// whose header names the live disk as its backing file (libvirt's doing): detach it with
    /// <see cref="IDiskImages.SetBackingAsync"/> before anything opens it with its backing.
    /// </summary>
    Task StartBackupJobAsync(string domain, BackupJobSpec spec, CancellationToken cancellationToken = default);

    /// <summary>
    /// The domain's backup job: running with its progress, or how the last one ended (read once: a second call after
    /// the end says None).
    /// </summary>
    Task<BackupJobStatus> GetBackupJobAsync(string domain, CancellationToken cancellationToken = default);

    /// <summary>Aborts the domain's running backup job (virDomainAbortJob); NoBlockJob when none runs.</summary>
    Task AbortBackupJobAsync(string domain, CancellationToken cancellationToken = default);

    /// <summary>The domain's checkpoints, parents before children.</summary>
    Task<IReadOnlyList<CheckpointInfo>> ListCheckpointsAsync(string domain, CancellationToken cancellationToken = default);

    /// <summary>
    /// Defines again a checkpoint from the XML <see cref="ListCheckpointsAsync"/> gave (after its metadata was lost: a
    /// domain undefined and defined again, libvirtd state lost); the bitmaps must still be in the images.
    /// </summary>
    Task RedefineCheckpointAsync(string domain, string checkpointXml, CancellationToken cancellationToken = default);

    /// <summary>
    /// Deletes a checkpoint: its bitmaps too (merged into its parent's, as libvirt does), or only libvirt's record of it
    /// with <paramref name="metadataOnly"/>.
    /// </summary>
    Task DeleteCheckpointAsync(string domain, string name, bool metadataOnly = false, CancellationToken cancellationToken = default);

    /// <summary>
    /// guest-ping through the QEMU guest agent, bounded by <paramref name="timeout"/>;
    /// <see cref="HypervisorErrorKind.AgentUnavailable"/> when no agent answers (none configured, not up yet).
    /// </summary>
    Task PingGuestAgentAsync(string domain, TimeSpan timeout, CancellationToken cancellationToken = default);

    /// <summary>
    /// Runs <paramref name="path"/> with <paramref name="arguments"/> in the guest through the agent (guest-exec, no
    /// shell added) and waits for it to exit, bounded by <paramref name="timeout"/> (<see cref="HypervisorErrorKind.Timeout"/>).
    /// </summary>
    Task<GuestCommandResult> RunGuestCommandAsync(string domain, string path, IReadOnlyList<string> arguments, TimeSpan timeout, CancellationToken cancellationToken = default);

    /// <summary>
    /// The last <paramref name="maxBytes"/> of what the domain's serial console wrote, when the console is written to a
    /// file (<c>&lt;serial type='file'&gt;</c>); null when it has no such console.
    /// </summary>
    Task<string?> ReadConsoleAsync(string domain, int maxBytes, CancellationToken cancellationToken = default);
}
