using System.Buffers;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Threading.Channels;
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

    /// <summary>Block buffers, shared by copies in flight (a few per copy: one being read, one being written, the hasher's queue).</summary>
    private static readonly ArrayPool<byte> Buffers = ArrayPool<byte>.Create(DefaultBlockSize, 32);

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
                await using var hasher = computeSha256 ? new Hasher() : null;
                var pacer = new Pacer(bandwidthBytesPerSecond);
                var reporter = new Reporter(progress, length);
                await WalkAsync(
                    src,
                    length,
                    blockSize,
                    hasher,
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

                // Trailing holes: the destination must have the full logical size. The fsync runs while the hasher
                // works through what is still queued (often long runs of zeros).
                RandomAccess.SetLength(dst, length);
                var flushed = Task.Run(() => Fsync(dst), CancellationToken.None);
                var sha = hasher is null ? null : await hasher.FinishAsync().ConfigureAwait(false);
                await flushed.ConfigureAwait(false);
                reporter.Done();
                FsyncDirectory(Path.GetDirectoryName(Path.GetFullPath(destination)));
                return new CopyResult(length, sha, sw.Elapsed);
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
        await using var hasher = new Hasher();
        await WalkAsync(handle, RandomAccess.GetLength(handle), blockSize, hasher, null, null, cancellationToken).ConfigureAwait(false);
        return await hasher.FinishAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// Walks a file in order: holes go to the hasher as zero runs without reading; data is read in blocks, the next
    /// block is read while the current one is handed to <paramref name="onData"/>, and the hasher digests blocks on its
    /// own thread.
    /// </summary>
    private static async Task WalkAsync(
        SafeFileHandle src,
        long length,
        int blockSize,
        Hasher? hasher,
        Func<long, ReadOnlyMemory<byte>, CancellationToken, ValueTask>? onData,
        Reporter? reporter,
        CancellationToken cancellationToken)
    {
        var position = 0L;
        while (position < length)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var dataStart = Math.Min(Seek(src, position, SeekData, length), length);
            if (dataStart > position)
            {
                if (hasher is not null)
                {
                    await hasher.AddZerosAsync(dataStart - position, cancellationToken).ConfigureAwait(false);
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

            var buffer = Buffers.Rent(blockSize);
            var pending = ReadFullAsync(src, buffer, position, (int)Math.Min(blockSize, dataEnd - position), cancellationToken);
            while (position < dataEnd)
            {
                var count = await pending.ConfigureAwait(false);
                if (count == 0)
                {
                    // The file shrank under us: the source was not frozen after all.
                    throw new HypervisorException(HypervisorErrorKind.OperationFailed, $"source ended at {position} of {length} bytes while copying");
                }

                var nextPosition = position + count;
                byte[]? nextBuffer = null;
                if (nextPosition < dataEnd)
                {
                    nextBuffer = Buffers.Rent(blockSize);
                    pending = ReadFullAsync(src, nextBuffer, nextPosition, (int)Math.Min(blockSize, dataEnd - nextPosition), cancellationToken);
                }

                if (onData is not null)
                {
                    await onData(position, buffer.AsMemory(0, count), cancellationToken).ConfigureAwait(false);
                }

                if (hasher is not null)
                {
                    // The hasher returns the buffer to the pool once digested.
                    await hasher.AddDataAsync(buffer, count, cancellationToken).ConfigureAwait(false);
                }
                else
                {
                    Buffers.Return(buffer);
                }

                position = nextPosition;
                reporter?.Advance(position);
                buffer = nextBuffer!;
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

    /// <summary>
    /// SHA-256 on its own task, fed in order through a small bounded queue: hashing (CPU) overlaps the reads, writes
    /// and the final fsync (I/O) instead of adding to them.
    /// </summary>
    private sealed class Hasher : IAsyncDisposable
    {
        private static readonly byte[] Zeros = new byte[1024 * 1024];
        private readonly Channel<(byte[]? Buffer, int Count, long Zeros)> _queue =
            Channel.CreateBounded<(byte[]?, int, long)>(new BoundedChannelOptions(3) { SingleReader = true, SingleWriter = true });

        private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        private readonly Task _worker;

        public Hasher() => _worker = Task.Run(DigestAsync);

        public ValueTask AddDataAsync(byte[] buffer, int count, CancellationToken cancellationToken) =>
            _queue.Writer.WriteAsync((buffer, count, 0), cancellationToken);

        public ValueTask AddZerosAsync(long count, CancellationToken cancellationToken) =>
            _queue.Writer.WriteAsync((null, 0, count), cancellationToken);

        public async Task<string> FinishAsync()
        {
            _queue.Writer.TryComplete();
            await _worker.ConfigureAwait(false);
            return Convert.ToHexStringLower(_hash.GetHashAndReset());
        }

        public async ValueTask DisposeAsync()
        {
            _queue.Writer.TryComplete();
            try
            {
                await _worker.ConfigureAwait(false);
            }
            catch (Exception)
            {
                // Already reported by FinishAsync, or irrelevant after a failed copy.
            }

            _hash.Dispose();
        }

        private async Task DigestAsync()
        {
            try
            {
                await foreach (var (buffer, count, zeros) in _queue.Reader.ReadAllAsync().ConfigureAwait(false))
                {
                    if (buffer is not null)
                    {
                        _hash.AppendData(buffer, 0, count);
                        Buffers.Return(buffer);
                        continue;
                    }

                    for (var left = zeros; left > 0;)
                    {
                        var n = (int)Math.Min(left, Zeros.Length);
                        _hash.AppendData(Zeros, 0, n);
                        left -= n;
                    }
                }
            }
            catch (Exception ex)
            {
                // Writers waiting on a full queue must not hang.
                _queue.Writer.TryComplete(ex);
                throw;
            }
        }
    }

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
