namespace Orchestrator.Hypervisor;

/// <summary>A persistent dirty bitmap of a qcow2 image (qemu-img info): in use, auto (follows writes), granularity in bytes.</summary>
public sealed record ImageBitmap(string Name, bool InUse, bool Auto, long Granularity);

public sealed record ImageInfo(string Path, string Format, long VirtualSize, long ActualSize, string? BackingFile, string? BackingFormat)
{
    /// <summary>
    /// The backing file name exactly as the image's header stores it (a relative name not resolved, a <c>json:</c>
    /// name as it is); <see cref="BackingFile"/> is that name resolved. Null: the header names no backing file.
    /// </summary>
    public string? BackingEntry { get; init; }
}

public sealed record ImageCheckResult(bool Clean, int Errors, int Leaks, string Output);

public sealed record CopyOptions
{
    /// <summary>
    /// The images below the source, top to bottom, each with its format, as the domain XML names them. Empty (the
    /// default): the source stands alone. Not empty: the copy is the whole chain flattened into one standalone image
    /// (qemu-img convert, every layer's format named, nothing probed), so it restores without the chain below.
    /// </summary>
    public IReadOnlyList<DiskLayer> SourceBackingChain { get; init; } = [];

    /// <summary>Output format; null keeps the source's.</summary>
    public string? TargetFormat { get; init; }

    /// <summary>Bytes per second; 0 is unlimited.</summary>
    public long BandwidthBytesPerSecond { get; init; }

    /// <summary>Compute a SHA-256 of the written file while copying.</summary>
    public bool ComputeSha256 { get; init; } = true;

    /// <summary>
    /// Compute the data digest (<see cref="ImageDigests.DataSha256"/>) while copying: it skips holes and zero blocks,
    /// so it costs only the data, however large and empty the disk.
    /// </summary>
    public bool ComputeDataSha256 { get; init; }

    /// <summary>Mode and group of the new file (default: owner only, 0600); it is created without following a link.</summary>
    public FilePrivacy Privacy { get; init; } = FilePrivacy.Private;
}

/// <summary>
/// Digests of an image file's logical content. <see cref="Sha256"/> is the plain SHA-256 of every byte (holes read as
/// zeros), what <c>sha256sum</c> prints. <see cref="DataSha256"/> is a SHA-256 over the file's non-zero 4 KiB blocks
/// only, each preceded by its byte offset (8 bytes, little-endian): equal for equal content whatever the hole layout,
/// and cheap for sparse disks.
/// </summary>
public sealed record ImageDigests(string Sha256, string DataSha256);

public sealed record CopyProgress(long BytesDone, long BytesTotal);

public sealed record CopyResult(long BytesCopied, string? Sha256, TimeSpan Duration, string? DataSha256 = null);

/// <summary>
/// Disk image operations where libvirt has no API. Never runs a shell. Every method that reads an image's structure
/// takes its format from the caller (the domain XML, a manifest or a run's state): nothing is probed from the file's
/// bytes, which a guest may have written, and no backing file the image names is opened unless the caller named it.
/// </summary>
public interface IDiskImages
{
    /// <summary>Metadata of one image opened as <paramref name="format"/>; its backing file is never opened.</summary>
    Task<ImageInfo> InfoAsync(string path, string format, CancellationToken cancellationToken = default);

    /// <summary>A new image; with a backing file its format is required (never probed).</summary>
    Task CreateAsync(string path, string format, long virtualSize, string? backingFile = null, string? backingFormat = null, CancellationToken cancellationToken = default);

    /// <summary>
    /// Copies an image that nobody writes to (a frozen base, of <paramref name="sourceFormat"/>) to a new file; refuses
    /// to overwrite. With <see cref="CopyOptions.SourceBackingChain"/> the chain is flattened into one standalone image.
    /// </summary>
    Task<CopyResult> CopyAsync(string source, string sourceFormat, string destination, CopyOptions options, IProgress<CopyProgress>? progress = null, CancellationToken cancellationToken = default);

    /// <summary>Consistency check of one image opened as <paramref name="format"/>, without any backing file.</summary>
    Task<ImageCheckResult> CheckAsync(string path, string format, CancellationToken cancellationToken = default);

    /// <summary>SHA-256 (lower-case hex) of the file's bytes, read back from disk.</summary>
    Task<string> ComputeSha256Async(string path, CancellationToken cancellationToken = default);

    /// <summary>Both digests of the file (lower-case hex), read back from disk in one pass.</summary>
    Task<ImageDigests> ComputeDigestsAsync(string path, CancellationToken cancellationToken = default);

    /// <summary>
    /// Offline commit of a qcow2 overlay into exactly the image below it, <c>backingChain[0]</c> (qemu-img commit -b),
    /// never deeper. <paramref name="backingChain"/> is the whole chain below the overlay, top to bottom, with formats:
    /// every image qemu-img opens is named with its format.
    /// </summary>
    Task CommitAsync(string overlayPath, IReadOnlyList<DiskLayer> backingChain, CancellationToken cancellationToken = default);

    /// <summary>Internal snapshots of a qcow2 image (a raw image has none and is not read).</summary>
    Task<IReadOnlyList<InternalSnapshotInfo>> ListSnapshotsAsync(string path, string format, CancellationToken cancellationToken = default);

    Task<bool> ExistsAsync(string path, CancellationToken cancellationToken = default);

    Task DeleteAsync(string path, CancellationToken cancellationToken = default);

    /// <summary>Free bytes on the file system that holds the path (or its nearest existing parent).</summary>
    Task<long> FreeSpaceAsync(string path, CancellationToken cancellationToken = default);

    /// <summary>
    /// The persistent dirty bitmaps stored in a qcow2 image (a raw image has none and is not read). In use: a QEMU has
    /// (or had, until it was killed) the image open and the bitmap's content on disk is not to be trusted.
    /// </summary>
    Task<IReadOnlyList<ImageBitmap>> ListBitmapsAsync(string path, string format, CancellationToken cancellationToken = default);

    /// <summary>
    /// Rewrites only the backing-file entry of a qcow2 image's header (qemu-img rebase -u: no data is read or moved,
    /// neither the old nor the new backing file is opened): null detaches it; otherwise <paramref name="backingFormat"/>
    /// is required and recorded. A relative <paramref name="backingFile"/> is resolved from the image's directory.
    /// </summary>
    Task SetBackingAsync(string path, string? backingFile, string? backingFormat, CancellationToken cancellationToken = default);
}
