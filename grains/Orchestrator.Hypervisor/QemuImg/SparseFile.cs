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
/// back yields. The data digest covers only the non-zero 4 KiB blocks (each after its offset), so it skips holes
/// without hashing them; it assumes data regions start on 4 KiB boundaries, as SEEK_DATA reports them on Linux file
/// systems (block-aligned).
/// </summary>
internal static partial class SparseFile
{
    internal const int DefaultBlockSize = 4 * 1024 * 1024;

    /// <summary>The granularity of the data digest: blocks of this size that are all zero are not part of it.</summary>
    internal const int DigestChunk = 4096;

    private const int SeekData = 3;
    private const int SeekHole = 4;
    private const int Enxio = 6;
    private static readonly TimeSpan ProgressInterval = TimeSpan.FromMilliseconds(100);

    /// <summary>Block buffers, shared by copies in flight (a few per copy: one being read, one being written, the hasher's queue).</summary>
    private static readonly ArrayPool<byte> Buffers = ArrayPool<byte>.Create(DefaultBlockSize, 32);

    /// <summary>Copies <paramref name="source"/> to a new file (created as by <see cref="SafeFiles.CreateNew"/>); refuses an existing destination; fsyncs at the end.</summary>
    internal static async Task<CopyResult> CopyAsync(
        string source,
        string destination,
        bool computeSha256,
        bool computeDataSha256,
        long bandwidthBytesPerSecond,
        IProgress<CopyProgress>? progress,
        CancellationToken cancellationToken,
        int blockSize = DefaultBlockSize,
        FilePrivacy? privacy = null)
    {
        var sw = Stopwatch.StartNew();
        using var src = File.OpenHandle(source, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, FileOptions.SequentialScan);
        // O_CREAT|O_EXCL|O_NOFOLLOW with the final mode: never through a planted link, never readable by others.
        var dst = SafeFiles.CreateNew(destination, privacy ?? FilePrivacy.Private);

        try
        {
            using (dst)
            {
                var length = RandomAccess.GetLength(src);
                await using var hasher = computeSha256 || computeDataSha256 ? new Hasher(computeSha256, computeDataSha256) : null;
                var pacer = new Pacer(bandwidthBytesPerSecond);
                var reporter = new Reporter(progress, length);
                var writeback = new Writeback(dst);
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
                            writeback.Written(offset, data.Length);
                        }

                        await pacer.PaceAsync(data.Length, ct).ConfigureAwait(false);
                    },
                    reporter,
                    cancellationToken).ConfigureAwait(false);

                // Trailing holes: the destination must have the full logical size. The fsync runs while the hasher
                // works through what is still queued (often long runs of zeros).
                RandomAccess.SetLength(dst, length);
                var flushed = Task.Run(() => Fsync(dst), CancellationToken.None);
                var digests = hasher is null ? default : await hasher.FinishAsync().ConfigureAwait(false);
                await flushed.ConfigureAwait(false);
                reporter.Done();
                FsyncDirectory(Path.GetDirectoryName(Path.GetFullPath(destination)));
                return new CopyResult(length, digests.Sha256, sw.Elapsed, digests.DataSha256);
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
    internal static async Task<string> Sha256Async(string path, CancellationToken cancellationToken, int blockSize = DefaultBlockSize) =>
        (await DigestsAsync(path, data: false, cancellationToken, blockSize).ConfigureAwait(false)).Sha256!;

    /// <summary>The SHA-256 and (when asked) the data digest of a file, in one pass that skips the reads of holes.</summary>
    internal static async Task<(string? Sha256, string? DataSha256)> DigestsAsync(string path, bool data, CancellationToken cancellationToken, int blockSize = DefaultBlockSize)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, FileOptions.SequentialScan);
        await using var hasher = new Hasher(full: true, data);
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
                    await hasher.AddDataAsync(buffer, count, position, cancellationToken).ConfigureAwait(false);
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
    private static partial int sync_file_range(int fd, long offset, long nbytes, uint flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fsync(int fd);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int open(string path, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int close(int fd);

    /// <summary>
    /// The digests on their own tasks, one per digest, each fed in order through a small bounded queue: hashing (CPU)
    /// overlaps the reads, writes and the final fsync (I/O) instead of adding to them, and the two digests of a
    /// read-back run side by side on two cores instead of one after the other. The full SHA-256 takes every byte (zero
    /// runs too); the data digest takes each non-zero 4 KiB block after its offset and nothing of the zero runs. A
    /// block's buffer goes back to the pool when every digest has taken it.
    /// </summary>
    private sealed class Hasher : IAsyncDisposable
    {
        private static readonly byte[] Zeros = new byte[1024 * 1024];
        private readonly Lane? _full;
        private readonly Lane? _data;

        public Hasher(bool full, bool data)
        {
            _full = full ? new Lane(dataChunks: false) : null;
            _data = data ? new Lane(dataChunks: true) : null;
        }

        public async ValueTask AddDataAsync(byte[] buffer, int count, long offset, CancellationToken cancellationToken)
        {
            var block = new Block(buffer, count, offset, (_full is null ? 0 : 1) + (_data is null ? 0 : 1));
            if (_full is not null)
            {
                await _full.AddAsync(block, cancellationToken).ConfigureAwait(false);
            }

            if (_data is not null)
            {
                await _data.AddAsync(block, cancellationToken).ConfigureAwait(false);
            }
        }

        public ValueTask AddZerosAsync(long count, CancellationToken cancellationToken) =>
            _full is null ? ValueTask.CompletedTask : _full.AddAsync(new Block(null, 0, 0, 1) { Zeros = count }, cancellationToken);

        public async Task<(string? Sha256, string? DataSha256)> FinishAsync()
        {
            _full?.Complete();
            _data?.Complete();
            return (
                _full is null ? null : await _full.FinishAsync().ConfigureAwait(false),
                _data is null ? null : await _data.FinishAsync().ConfigureAwait(false));
        }

        public async ValueTask DisposeAsync()
        {
            if (_full is not null)
            {
                await _full.DisposeAsync().ConfigureAwait(false);
            }

            if (_data is not null)
            {
                await _data.DisposeAsync().ConfigureAwait(false);
            }
        }

        /// <summary>A block read once, handed to every digest; its buffer returns to the pool after the last.</summary>
        private sealed class Block(byte[]? buffer, int count, long offset, int takers)
        {
            private int _takers = takers;

            public byte[]? Buffer { get; } = buffer;

            public int Count { get; } = count;

            public long Offset { get; } = offset;

            public long Zeros { get; init; }

            public void Release()
            {
                if (Interlocked.Decrement(ref _takers) == 0 && Buffer is not null)
                {
                    Buffers.Return(Buffer);
                }
            }
        }

        /// <summary>One digest on its own task.</summary>
        private sealed class Lane : IAsyncDisposable
        {
            private readonly Channel<Block> _queue = Channel.CreateBounded<Block>(new BoundedChannelOptions(3) { SingleReader = true, SingleWriter = true });
            private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            private readonly bool _dataChunks;
            private readonly Task _worker;

            public Lane(bool dataChunks)
            {
                _dataChunks = dataChunks;
                _worker = Task.Run(DigestAsync);
            }

            public ValueTask AddAsync(Block block, CancellationToken cancellationToken) => _queue.Writer.WriteAsync(block, cancellationToken);

            public void Complete() => _queue.Writer.TryComplete();

            public async Task<string> FinishAsync()
            {
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
                    await foreach (var block in _queue.Reader.ReadAllAsync().ConfigureAwait(false))
                    {
                        try
                        {
                            if (block.Buffer is not null)
                            {
                                if (_dataChunks)
                                {
                                    AppendDataChunks(_hash, block.Buffer.AsSpan(0, block.Count), block.Offset);
                                }
                                else
                                {
                                    _hash.AppendData(block.Buffer, 0, block.Count);
                                }

                                continue;
                            }

                            for (var left = block.Zeros; left > 0;)
                            {
                                var n = (int)Math.Min(left, Zeros.Length);
                                _hash.AppendData(Zeros, 0, n);
                                left -= n;
                            }
                        }
                        finally
                        {
                            block.Release();
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
    }

    /// <summary>Adds each non-zero 4 KiB block of <paramref name="data"/> (at file offset <paramref name="offset"/>) after its offset.</summary>
    internal static void AppendDataChunks(IncrementalHash digest, ReadOnlySpan<byte> data, long offset)
    {
        Span<byte> offsetBytes = stackalloc byte[sizeof(long)];
        var position = 0;
        while (position < data.Length)
        {
            // Chunks end on absolute 4 KiB boundaries, so the same content gives the same chunks however it was read.
            var end = (int)Math.Min(data.Length, position + (DigestChunk - ((offset + position) % DigestChunk)));
            var chunk = data[position..end];
            if (chunk.IndexOfAnyExcept((byte)0) >= 0)
            {
                System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(offsetBytes, offset + position);
                digest.AppendData(offsetBytes);
                digest.AppendData(chunk);
            }

            position = end;
        }
    }

    /// <summary>
    /// Starts writeback of what was written, every <see cref="Batch"/> bytes, without waiting for it
    /// (sync_file_range with SYNC_FILE_RANGE_WRITE): the disk writes while the copy goes on, so the final fsync only
    /// waits for the tail instead of the whole file. It also keeps a large copy from piling up dirty pages on the
    /// host. Best effort: where the call is not supported, the final fsync does all the work as before.
    /// </summary>
    private sealed class Writeback(SafeFileHandle handle)
    {
        private const long Batch = 16L * 1024 * 1024;
        private const uint SyncFileRangeWrite = 2;
        private long _start = -1;
        private long _end;
        private bool _unsupported;

        public void Written(long offset, int count)
        {
            if (_unsupported)
            {
                return;
            }

            if (_start < 0 || offset != _end)
            {
                // A new run of data after a hole: start the previous run's writeback first.
                Kick();
                _start = offset;
            }

            _end = offset + count;
            if (_end - _start >= Batch)
            {
                Kick();
                _start = -1;
            }
        }

        private void Kick()
        {
            if (_start < 0 || _end <= _start)
            {
                return;
            }

            var added = false;
            try
            {
                handle.DangerousAddRef(ref added);
                if (sync_file_range((int)handle.DangerousGetHandle(), _start, _end - _start, SyncFileRangeWrite) != 0)
                {
                    _unsupported = true;
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
