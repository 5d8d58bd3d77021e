namespace Orchestrator.Hypervisor;

public sealed record ImageInfo(string Path, string Format, long VirtualSize, long ActualSize, string? BackingFile, string? BackingFormat);

public sealed record ImageCheckResult(bool Clean, int Errors, int Leaks, string Output);

public sealed record CopyOptions
{
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

/// <summary>Disk image operations where libvirt has no API. Never runs a shell.</summary>
public interface IDiskImages
{
    Task<ImageInfo> InfoAsync(string path, CancellationToken cancellationToken = default);

    Task CreateAsync(string path, string format, long virtualSize, string? backingFile = null, string? backingFormat = null, CancellationToken cancellationToken = default);

    /// <summary>Copies an image that nobody writes to (a frozen base) to a new file; refuses to overwrite.</summary>
    Task<CopyResult> CopyAsync(string source, string destination, CopyOptions options, IProgress<CopyProgress>? progress = null, CancellationToken cancellationToken = default);

    Task<ImageCheckResult> CheckAsync(string path, CancellationToken cancellationToken = default);

    /// <summary>SHA-256 (lower-case hex) of the file's bytes, read back from disk.</summary>
    Task<string> ComputeSha256Async(string path, CancellationToken cancellationToken = default);

    /// <summary>Both digests of the file (lower-case hex), read back from disk in one pass.</summary>
    Task<ImageDigests> ComputeDigestsAsync(string path, CancellationToken cancellationToken = default);

    /// <summary>Offline commit of an overlay into its backing file (qemu-img commit).</summary>
    Task CommitAsync(string overlayPath, CancellationToken cancellationToken = default);

    Task<IReadOnlyList<InternalSnapshotInfo>> ListSnapshotsAsync(string path, CancellationToken cancellationToken = default);

    Task<bool> ExistsAsync(string path, CancellationToken cancellationToken = default);

    Task DeleteAsync(string path, CancellationToken cancellationToken = default);

    /// <summary>Free bytes on the file system that holds the path (or its nearest existing parent).</summary>
    Task<long> FreeSpaceAsync(string path, CancellationToken cancellationToken = default);
}
