using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;

namespace Orchestrator.Hypervisor.QemuImg;

/// <summary>
/// Sparse-aware file copy and hashing. Holes of the source are found with lseek(SEEK_DATA/SEEK_HOLE) and skipped
/// without reading; inside data regions, blocks that are all zero are not written either, so the copy stays sparse.
/// The SHA-256 covers the full logical content (holes hash as zeros), which is exactly what reading the destination
/// back yields.
/// </summary>
internal static partial class SparseFile
{
    internal const int DefaultBlockSize = 4 * 1024 * 1024;

    private const int SeekData = 3;
    private const int SeekHole = 4;
    private const int Enxio = 6;
    private static readonly TimeSpan ProgressInterval = TimeSpan.FromMilliseconds(100);

    /// <summary>Copies <paramref name="source"/> to a new file; refuses an existing destination; fsyncs at the end.</summary>
    internal static async Task<CopyResult> CopyAsync(
        string source,
        string destination,
        bool computeSha256,
        long bandwidthBytesPerSecond,
        IProgress<CopyProgress>? progress,
        CancellationToken cancellationToken,
        int blockSize = DefaultBlockSize)
    {
        var sw = Stopwatch.StartNew();
        using var src = File.OpenHandle(source, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, FileOptions.SequentialScan);
        SafeFileHandle dst;
        try
        {
            dst = File.OpenHandle(destination, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException) when (File.Exists(destination) || Directory.Exists(destination))
        {
            throw new HypervisorException(HypervisorErrorKind.FileExists, $"copy destination {destination} exists already; refusing to overwrite it");
        }

        try
        {
            using (dst)
            {
                var length = RandomAccess.GetLength(src);
                using var hash = computeSha256 ? IncrementalHash.CreateHash(HashAlgorithmName.SHA256) : null;
                var pacer = new Pacer(bandwidthBytesPerSecond);
                var reporter = new Reporter(progress, length);
                await WalkAsync(
                    src,
                    length,
                    blockSize,
                    hash,
                    async (offset, data, ct) =>
                    {
                        if (data.Span.IndexOfAnyExcept((byte)0) >= 0)
                        {
                            await RandomAccess.WriteAsync(dst, data, offset, ct).ConfigureAwait(false);
                        }

                        await pacer.PaceAsync(data.Length, ct).ConfigureAwait(false);
                    },
                    reporter,
                    cancellationToken).ConfigureAwait(false);

                // Trailing holes: the destination must have the full logical size.
                RandomAccess.SetLength(dst, length);
                Fsync(dst);
                reporter.Done();
                FsyncDirectory(Path.GetDirectoryName(Path.GetFullPath(destination)));
                return new CopyResult(length, hash is null ? null : Convert.ToHexStringLower(hash.GetHashAndReset()), sw.Elapsed);
            }
        }
        catch
        {
            // A partial copy must not look like a backup, and must not block a retry (destinations are never overwritten).
            File.Delete(destination);
            throw;
        }
    }

    /// <summary>SHA-256 of a file's logical content, skipping the reads of holes.</summary>
    internal static async Task<string> Sha256Async(string path, CancellationToken cancellationToken, int blockSize = DefaultBlockSize)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, FileOptions.SequentialScan);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        await WalkAsync(handle, RandomAccess.GetLength(handle), blockSize, hash, null, null, cancellationToken).ConfigureAwait(false);
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    /// <summary>
    /// Walks a file in order: holes are hashed as zeros without reading; data is read in blocks (the next block is read
    /// while the current one is hashed and handed to <paramref name="onData"/>).
    /// </summary>
    private static async Task WalkAsync(
        SafeFileHandle src,
        long length,
        int blockSize,
        IncrementalHash? hash,
        Func<long, ReadOnlyMemory<byte>, CancellationToken, ValueTask>? onData,
        Reporter? reporter,
        CancellationToken cancellationToken)
    {
        var zeros = hash is null ? null : new byte[Math.Min(blockSize, 1024 * 1024)];
        var current = new byte[blockSize];
        var next = new byte[blockSize];
        var position = 0L;
        while (position < length)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var dataStart = Math.Min(Seek(src, position, SeekData, length), length);
            if (dataStart > position)
            {
                if (hash is not null)
                {
                    for (var left = dataStart - position; left > 0;)
                    {
                        var n = (int)Math.Min(left, zeros!.Length);
                        hash.AppendData(zeros, 0, n);
                        left -= n;
                    }
                }

                position = dataStart;
                reporter?.Advance(position);
                if (position >= length)
                {
                    break;
                }
            }

            var dataEnd = Math.Min(Seek(src, position, SeekHole, length), length);
            if (dataEnd <= position)
            {
                dataEnd = length;
            }

            var pending = ReadFullAsync(src, current, position, (int)Math.Min(blockSize, dataEnd - position), cancellationToken);
            while (position < dataEnd)
            {
                var count = await pending.ConfigureAwait(false);
                if (count == 0)
                {
                    // The file shrank under us: the source was not frozen after all.
                    throw new HypervisorException(HypervisorErrorKind.OperationFailed, $"source ended at {position} of {length} bytes while copying");
                }

                var nextPosition = position + count;
                if (nextPosition < dataEnd)
                {
                    pending = ReadFullAsync(src, next, nextPosition, (int)Math.Min(blockSize, dataEnd - nextPosition), cancellationToken);
                }

                var data = current.AsMemory(0, count);
                hash?.AppendData(data.Span);
                if (onData is not null)
                {
                    await onData(position, data, cancellationToken).ConfigureAwait(false);
                }

                position = nextPosition;
                reporter?.Advance(position);
                (current, next) = (next, current);
            }
        }
    }

    private static async ValueTask<int> ReadFullAsync(SafeFileHandle handle, byte[] buffer, long offset, int count, CancellationToken cancellationToken)
    {
        var done = 0;
        while (done < count)
        {
            var n = await RandomAccess.ReadAsync(handle, buffer.AsMemory(done, count - done), offset + done, cancellationToken).ConfigureAwait(false);
            if (n == 0)
            {
                break;
            }

            done += n;
        }

        return done;
    }

    /// <summary>lseek with SEEK_DATA/SEEK_HOLE; where unsupported, everything is data.</summary>
    private static long Seek(SafeFileHandle handle, long offset, int whence, long length)
    {
        var added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            var result = lseek((int)handle.DangerousGetHandle(), offset, whence);
            if (result >= 0)
            {
                return result;
            }

            var errno = Marshal.GetLastPInvokeError();
            return whence == SeekData && errno == Enxio ? length : whence == SeekData ? offset : length;
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    private static void Fsync(SafeFileHandle handle)
    {
        var added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            if (fsync((int)handle.DangerousGetHandle()) != 0)
            {
                throw new IOException($"fsync failed: errno {Marshal.GetLastPInvokeError()}");
            }
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    /// <summary>Makes the new directory entry durable too. Best effort.</summary>
    private static void FsyncDirectory(string? directory)
    {
        if (directory is null)
        {
            return;
        }

        const int ORdOnly = 0;
        const int ODirectory = 0x10000;
        var fd = open(directory, ORdOnly | ODirectory);
        if (fd >= 0)
        {
            _ = fsync(fd);
            _ = close(fd);
        }
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial long lseek(int fd, long offset, int whence);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fsync(int fd);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int open(string path, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int close(int fd);

    /// <summary>Keeps the average rate at or below the limit by sleeping when ahead of schedule.</summary>
    private sealed class Pacer(long bytesPerSecond)
    {
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private long _bytes;

        public async ValueTask PaceAsync(int bytes, CancellationToken cancellationToken)
        {
            if (bytesPerSecond <= 0)
            {
                return;
            }

            _bytes += bytes;
            var due = TimeSpan.FromSeconds((double)_bytes / bytesPerSecond);
            var ahead = due - _clock.Elapsed;
            if (ahead > TimeSpan.FromMilliseconds(1))
            {
                await Task.Delay(ahead, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Reports progress at most every 100 ms, and once at the end.</summary>
    private sealed class Reporter(IProgress<CopyProgress>? progress, long total)
    {
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private TimeSpan _next = TimeSpan.Zero;

        public void Advance(long done)
        {
            if (progress is null || _clock.Elapsed < _next)
            {
                return;
            }

            _next = _clock.Elapsed + ProgressInterval;
            progress.Report(new CopyProgress(done, total));
        }

        public void Done() => progress?.Report(new CopyProgress(total, total));
    }
}
