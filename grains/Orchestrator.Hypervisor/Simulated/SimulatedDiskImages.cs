namespace Orchestrator.Hypervisor.Simulated;

public sealed partial class SimulatedHypervisor
{
    /// <summary>Image files of a simulated host: in memory, with content identities instead of bytes.</summary>
    private sealed class SimulatedDiskImages(SimulatedHypervisor host) : IDiskImages
    {
        public Task<ImageInfo> InfoAsync(string path, string format, CancellationToken cancellationToken = default)
        {
            lock (host._lock)
            {
                var image = Get(path, format);
                var backingFormat = image.BackingFormatEntry ?? (image.Backing is { } b && host._files.TryGetValue(b, out var below) ? below.Format : null);
                return Task.FromResult(new ImageInfo(path, image.Format, image.VirtualSize, image.Allocated, image.Backing, backingFormat) { BackingEntry = image.BackingEntry ?? image.Backing });
            }
        }

        public Task CreateAsync(string path, string format, long virtualSize, string? backingFile = null, string? backingFormat = null, CancellationToken cancellationToken = default)
        {
            lock (host._lock)
            {
                host.ThrowIfFaulted(SimulatedOperation.CreateImage);
                if (host._files.ContainsKey(path))
                {
                    throw new HypervisorException(HypervisorErrorKind.FileExists, $"'{path}' already exists");
                }

                if (backingFile is null && virtualSize <= 0)
                {
                    throw new HypervisorException(HypervisorErrorKind.InvalidArgument, "a size is needed for an image without a backing file");
                }

                // As qemu-img create (contract suite): no size given with a backing file takes the backing file's size
                // (this used to make an image of 0 bytes).
                var size = virtualSize;
                if (backingFile is not null)
                {
                    var below = Get(backingFile, backingFormat ?? throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"'{path}': the backing file's format must be named"));
                    size = virtualSize > 0 ? virtualSize : below.VirtualSize;
                }

                host._files[path] = new SimImage(path, format, size) { Backing = backingFile };
                host.WriteFile(host._files[path]);
                return Task.CompletedTask;
            }
        }

        public async Task<CopyResult> CopyAsync(string source, string sourceFormat, string destination, CopyOptions options, IProgress<CopyProgress>? progress = null, CancellationToken cancellationToken = default)
        {
            var started = host._time.GetTimestamp();
            SimImage image;
            List<SimImage> chain;
            lock (host._lock)
            {
                host.ThrowIfFaulted(SimulatedOperation.Copy);
                image = Get(source, sourceFormat);
                chain = RequireChain(image, options.SourceBackingChain);
                if (host._files.ContainsKey(destination))
                {
                    throw new HypervisorException(HypervisorErrorKind.FileExists, $"'{destination}' already exists");
                }

                if (image.Allocated > host.Options.FreeSpaceBytes)
                {
                    throw new HypervisorException(HypervisorErrorKind.NoSpace, $"no space left for '{destination}'");
                }
            }

            // A single image is copied byte for byte, so its whole file length counts, as the real driver's sparse copy
            // reports it: a raw file is as long as its disk (contract suite: this used to count only the allocated
            // part); a qcow2 file's length is its allocation here.
            var total = chain.Count == 0
                ? (image.Format == "raw" ? image.VirtualSize : image.Allocated)
                : image.Allocated + chain.Sum(l => l.Allocated);
            var moved = image.Allocated + chain.Sum(l => l.Allocated); // holes are skipped: the time goes to the data
            var rate = options.BandwidthBytesPerSecond > 0 && (host.Options.CopyBytesPerSecond == 0 || options.BandwidthBytesPerSecond < host.Options.CopyBytesPerSecond)
                ? options.BandwidthBytesPerSecond
                : host.Options.CopyBytesPerSecond;
            const int Steps = 10;
            var now = Interlocked.Increment(ref host._copies);
            for (var max = Volatile.Read(ref host._maxCopies); now > max && Interlocked.CompareExchange(ref host._maxCopies, now, max) != max; max = Volatile.Read(ref host._maxCopies))
            {
            }

            try
            {
                for (var step = 1; step <= Steps; step++)
                {
                    if (rate > 0)
                    {
                        await Task.Delay(TimeSpan.FromSeconds((double)moved / rate / Steps), host._time, cancellationToken);
                    }

                    cancellationToken.ThrowIfCancellationRequested();
                    progress?.Report(new CopyProgress(total * step / Steps, total));
                }
            }
            finally
            {
                Interlocked.Decrement(ref host._copies);
            }

            lock (host._lock)
            {
                // A single image is copied as it is; a chain is flattened into one standalone image (qcow2 unless
                // asked otherwise), its content the merge of every layer's.
                var copy = chain.Count == 0
                    ? new SimImage(destination, options.TargetFormat ?? image.Format, image.VirtualSize) { Allocated = image.Allocated, ContentId = image.ContentId, Backing = image.Backing, BackingEntry = image.BackingEntry, BackingFormatEntry = image.BackingFormatEntry } // a byte copy still names the backing file
                    : new SimImage(destination, options.TargetFormat ?? "qcow2", image.VirtualSize) { Allocated = total, ContentId = MergedContent([image, .. chain]) };
                var digests = (Full: copy.Sha256(), Data: copy.DataSha256());
                if (host._corruptCopies > 0)
                {
                    // A write that went wrong: the digests are of what was read, the file holds something else.
                    host._corruptCopies--;
                    copy.Touch();
                }

                host._files[destination] = copy;
                host.WriteFile(copy, options.Privacy);
                return new CopyResult(total, options.ComputeSha256 ? digests.Full : null, host._time.GetElapsedTime(started), options.ComputeDataSha256 ? digests.Data : null);
            }
        }

        public Task<ImageCheckResult> CheckAsync(string path, string format, CancellationToken cancellationToken = default)
        {
            lock (host._lock)
            {
                host.ThrowIfFaulted(SimulatedOperation.Check);
                Get(path, format);
                return Task.FromResult(new ImageCheckResult(true, 0, 0, "No errors were found on the image."));
            }
        }

        public Task<string> ComputeSha256Async(string path, CancellationToken cancellationToken = default)
        {
            lock (host._lock)
            {
                return Task.FromResult(Get(path).Sha256());
            }
        }

        public Task<ImageDigests> ComputeDigestsAsync(string path, CancellationToken cancellationToken = default)
        {
            lock (host._lock)
            {
                var image = Get(path);
                return Task.FromResult(new ImageDigests(image.Sha256(), image.DataSha256()));
            }
        }

        public Task CommitAsync(string overlayPath, IReadOnlyList<DiskLayer> backingChain, CancellationToken cancellationToken = default)
        {
            lock (host._lock)
            {
                host.ThrowIfFaulted(SimulatedOperation.Commit);
                var overlay = Get(overlayPath, "qcow2");
                if (overlay.Backing is null || backingChain.Count == 0)
                {
                    throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"'{overlayPath}' has no backing file to commit into");
                }

                // qemu-img commit -b: into exactly the image below the overlay.
                RequireChain(overlay, backingChain)[0].Touch();
                return Task.CompletedTask;
            }
        }

        public Task<IReadOnlyList<InternalSnapshotInfo>> ListSnapshotsAsync(string path, string format, CancellationToken cancellationToken = default)
        {
            lock (host._lock)
            {
                var image = Get(path, format);
                return Task.FromResult<IReadOnlyList<InternalSnapshotInfo>>(format == "qcow2" ? [.. image.Snapshots] : []);
            }
        }

        public Task<bool> ExistsAsync(string path, CancellationToken cancellationToken = default)
        {
            lock (host._lock)
            {
                return Task.FromResult(host._files.ContainsKey(path));
            }
        }

        public Task DeleteAsync(string path, CancellationToken cancellationToken = default)
        {
            lock (host._lock)
            {
                host.ThrowIfFaulted(SimulatedOperation.DeleteImage);
                // contract suite: ImageInUse naming the domain and the disk, like the libvirt driver's guard.
                foreach (var domain in host._domains.Values)
                {
                    if (domain.Disks.FirstOrDefault(disk => disk.Chain.Contains(path)) is { } disk)
                    {
                        var role = disk.Chain[0] == path ? "the active image" : $"backing layer {path}";
                        throw new HypervisorException(
                            HypervisorErrorKind.ImageInUse,
                            $"refusing to delete {path}: it is {role} of disk {disk.Target} of domain '{domain.Name}' ({domain.State})");
                    }
                }

                host._files.Remove(path);
                host.DeleteFile(path);
                return Task.CompletedTask;
            }
        }

        public Task<IReadOnlyList<ImageBitmap>> ListBitmapsAsync(string path, string format, CancellationToken cancellationToken = default)
        {
            lock (host._lock)
            {
                var image = Get(path, format);
                var open = host._domains.Values.Any(d => d.IsActive && d.Disks.Any(disk => disk.Chain[0] == path));
                return Task.FromResult<IReadOnlyList<ImageBitmap>>(format == "qcow2"
                    ? [.. image.Bitmaps.Keys.Select(name => new ImageBitmap(name, open, true, 65536))]
                    : []);
            }
        }

        public Task SetBackingAsync(string path, string? backingFile, string? backingFormat, CancellationToken cancellationToken = default)
        {
            lock (host._lock)
            {
                var image = Get(path, "qcow2");
                if (backingFile is not null && backingFormat is not ("raw" or "qcow2"))
                {
                    throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"backing format: '{backingFormat}' is not an image format this driver opens (raw or qcow2); formats are named, never probed");
                }

                // qemu-img rebase -u: the header entry only, resolved from the image's directory; nothing is opened.
                image.Backing = backingFile is null ? null : Path.GetFullPath(backingFile, Path.GetDirectoryName(path)!);
                image.BackingEntry = backingFile;
                image.BackingFormatEntry = backingFile is null ? null : backingFormat;
                host.WriteFile(image);
                return Task.CompletedTask;
            }
        }

        public Task<long> FreeSpaceAsync(string path, CancellationToken cancellationToken = default) =>
            Task.FromResult(host.Options.FreeSpaceBytes);

        private SimImage Get(string path) =>
            host._files.TryGetValue(path, out var image)
                ? image
                : throw new HypervisorException(HypervisorErrorKind.FileNotFound, $"'{path}' does not exist");

        /// <summary>The image, opened as <paramref name="format"/>: a wrong format is refused (qemu-img would misread it).</summary>
        private SimImage Get(string path, string format)
        {
            var image = Get(path);
            if (format != image.Format)
            {
                throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"'{path}' is {image.Format}, opened as '{format}'");
            }

            return image;
        }

        /// <summary>The images a caller named below <paramref name="top"/>: each must be the real backing of the one above, in its real format.</summary>
        private List<SimImage> RequireChain(SimImage top, IReadOnlyList<DiskLayer> layers)
        {
            var images = new List<SimImage>();
            var above = top;
            foreach (var layer in layers)
            {
                if (above.Backing != layer.Path)
                {
                    throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"'{layer.Path}' is not the backing file of '{above.Path}'");
                }

                above = Get(layer.Path, layer.Format);
                images.Add(above);
            }

            return images;
        }

        private static Guid MergedContent(IEnumerable<SimImage> layers) =>
            new(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(string.Join('/', layers.Select(l => l.ContentId))))[..16]);
    }
}
