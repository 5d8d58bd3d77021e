using Microsoft.Extensions.Logging;

namespace Orchestrator.Hypervisor.Libvirt;

/// <summary>
/// What libvirt does not tell about an inactive domain, and the one image operation that needs the domains: libvirt
/// reads the images of a domain only when it starts it, so an inactive domain's XML has no backing chain even when
/// its qcow2 disk is an overlay. The chain is read here from the image headers (every format named, never probed),
/// and an image any domain uses is never deleted.
/// </summary>
public sealed partial class LibvirtHypervisor
{
    /// <summary>Deepest offline chain followed; a deeper one (or a loop a hostile header made) is "not described".</summary>
    private const int MaxOfflineChainDepth = 32;

    private static readonly HashSet<string> NamedFormats = new(StringComparer.Ordinal) { "raw", "qcow2" };

    /// <summary>
    /// The domain with the backing chain of each inactive qcow2 disk that libvirt left undescribed read from the
    /// images; an active domain, a raw disk, or a chain libvirt described (a definition that names it) is kept.
    /// </summary>
    private async Task<DomainInfo> WithOfflineChainsAsync(DomainInfo domain, CancellationToken cancellationToken)
    {
        if (domain.IsActive || !domain.Disks.Any(NeedsOfflineChain))
        {
            return domain;
        }

        var disks = new List<DomainDisk>(domain.Disks.Count);
        foreach (var disk in domain.Disks)
        {
            disks.Add(NeedsOfflineChain(disk) ? await ReadOfflineChainAsync(domain.Name, disk, cancellationToken).ConfigureAwait(false) : disk);
        }

        return domain with { Disks = disks };
    }

    private static bool NeedsOfflineChain(DomainDisk disk) =>
        disk.Format == "qcow2" && disk.BackingChain.Count == 0 && disk.ChainDescribed;

    /// <summary>
    /// Follows the chain below an inactive qcow2 disk one header at a time: <c>qemu-img info -f qcow2</c> of each qcow2
    /// layer (which opens no backing file), the layer below taken with the format its header records. A raw layer ends
    /// the chain and is never opened (its bytes are the guest's and may look like a qcow2 header). A backing file whose
    /// format the header does not record, one that is not a local file, a missing or unreadable layer, a loop or a
    /// chain deeper than <see cref="MaxOfflineChainDepth"/> leave the chain "not described" (ChainDescribed false):
    /// nothing may copy, flatten or commit it by guesswork.
    /// </summary>
    private async Task<DomainDisk> ReadOfflineChainAsync(string domain, DomainDisk disk, CancellationToken cancellationToken)
    {
        var chain = new List<DiskLayer>();
        var seen = new HashSet<string>(StringComparer.Ordinal) { CanonicalPath(disk.SourcePath) };
        var path = disk.SourcePath;
        for (var depth = 0; depth < MaxOfflineChainDepth; depth++)
        {
            ImageInfo info;
            try
            {
                info = await _images.InfoAsync(path, "qcow2", cancellationToken).ConfigureAwait(false);
            }
            catch (HypervisorException e) when (e.Kind is HypervisorErrorKind.FileNotFound or HypervisorErrorKind.ToolFailed or HypervisorErrorKind.Timeout)
            {
                Log.OfflineChainUnread(_logger, domain, disk.Target, path, e.Message);
                return disk with { BackingChain = chain, ChainDescribed = false };
            }

            if (string.IsNullOrEmpty(info.BackingFile))
            {
                return disk with { BackingChain = chain, ChainDescribed = true };
            }

            var backing = info.BackingFile;
            var format = info.BackingFormat;
            if (format is null || !NamedFormats.Contains(format) || !Path.IsPathFullyQualified(backing) || !seen.Add(CanonicalPath(backing)))
            {
                Log.OfflineChainUnread(_logger, domain, disk.Target, path, $"backing file '{backing}' with format '{format ?? "(not recorded)"}' cannot be followed without guessing");
                return disk with { BackingChain = chain, ChainDescribed = false };
            }

            chain.Add(new DiskLayer(backing, format));
            if (format == "raw")
            {
                return disk with { BackingChain = chain, ChainDescribed = true };
            }

            path = backing;
        }

        Log.OfflineChainUnread(_logger, domain, disk.Target, path, $"chain deeper than {MaxOfflineChainDepth} layers");
        return disk with { BackingChain = chain, ChainDescribed = false };
    }

    /// <summary>The path with every symbolic link resolved; the lexical full path when it does not resolve (gone).</summary>
    private static string CanonicalPath(string path) => SafeFiles.RealPath(path) ?? Path.GetFullPath(path);

    /// <summary>
    /// The images of <see cref="ConnectAsync"/> with one addition: <see cref="DeleteAsync"/> refuses (ImageInUse) an
    /// image that any domain of the host, running or only defined, has as a disk's active image or anywhere in its
    /// backing chain (the chain of an inactive domain read from its images), compared by real path so a symbolic link
    /// or another spelling of the path is caught too. One domain listing per delete.
    /// </summary>
    private sealed class GuardedDiskImages(IDiskImages inner, LibvirtHypervisor owner) : IDiskImages
    {
        public Task<ImageInfo> InfoAsync(string path, string format, CancellationToken cancellationToken = default) =>
            inner.InfoAsync(path, format, cancellationToken);

        public Task CreateAsync(string path, string format, long virtualSize, string? backingFile = null, string? backingFormat = null, CancellationToken cancellationToken = default) =>
            inner.CreateAsync(path, format, virtualSize, backingFile, backingFormat, cancellationToken);

        public Task<CopyResult> CopyAsync(string source, string sourceFormat, string destination, CopyOptions options, IProgress<CopyProgress>? progress = null, CancellationToken cancellationToken = default) =>
            inner.CopyAsync(source, sourceFormat, destination, options, progress, cancellationToken);

        public Task<ImageCheckResult> CheckAsync(string path, string format, CancellationToken cancellationToken = default) =>
            inner.CheckAsync(path, format, cancellationToken);

        public Task<string> ComputeSha256Async(string path, CancellationToken cancellationToken = default) =>
            inner.ComputeSha256Async(path, cancellationToken);

        public Task<ImageDigests> ComputeDigestsAsync(string path, CancellationToken cancellationToken = default) =>
            inner.ComputeDigestsAsync(path, cancellationToken);

        public Task CommitAsync(string overlayPath, IReadOnlyList<DiskLayer> backingChain, CancellationToken cancellationToken = default) =>
            inner.CommitAsync(overlayPath, backingChain, cancellationToken);

        public Task<IReadOnlyList<InternalSnapshotInfo>> ListSnapshotsAsync(string path, string format, CancellationToken cancellationToken = default) =>
            inner.ListSnapshotsAsync(path, format, cancellationToken);

        public Task<bool> ExistsAsync(string path, CancellationToken cancellationToken = default) =>
            inner.ExistsAsync(path, cancellationToken);

        public Task<IReadOnlyList<ImageBitmap>> ListBitmapsAsync(string path, string format, CancellationToken cancellationToken = default) =>
            inner.ListBitmapsAsync(path, format, cancellationToken);

        public Task SetBackingAsync(string path, string? backingFile, string? backingFormat, CancellationToken cancellationToken = default) =>
            inner.SetBackingAsync(path, backingFile, backingFormat, cancellationToken);

        public async Task DeleteAsync(string path, CancellationToken cancellationToken = default)
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(path);
            if (File.Exists(path) || new FileInfo(path).LinkTarget is not null)
            {
                var target = CanonicalPath(path);
                foreach (var domain in await owner.ListDomainsAsync(cancellationToken).ConfigureAwait(false))
                {
                    foreach (var disk in domain.Disks)
                    {
                        if (CanonicalPath(disk.SourcePath) == target)
                        {
                            throw InUse(path, target, domain, disk, "the active image");
                        }

                        if (disk.BackingChain.FirstOrDefault(l => CanonicalPath(l.Path) == target) is { } layer)
                        {
                            throw InUse(path, target, domain, disk, $"backing layer {layer.Path}");
                        }
                    }
                }
            }

            await inner.DeleteAsync(path, cancellationToken).ConfigureAwait(false);
        }

        public Task<long> FreeSpaceAsync(string path, CancellationToken cancellationToken = default) =>
            inner.FreeSpaceAsync(path, cancellationToken);

        private static HypervisorException InUse(string path, string target, DomainInfo domain, DomainDisk disk, string role)
        {
            var resolved = target == Path.GetFullPath(path) ? string.Empty : $" (= {target})";
            return new HypervisorException(
                HypervisorErrorKind.ImageInUse,
                $"refusing to delete {path}{resolved}: it is {role} of disk {disk.Target} of domain '{domain.Name}' ({domain.State})");
        }
    }
}
