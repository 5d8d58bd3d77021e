using System.Diagnostics;
using System.Security.Cryptography;
using Orchestrator.Hypervisor.QemuImg;

namespace Orchestrator.Hypervisor.Tests;

/// <summary>qemu-img and the sparse copy on real files (needs qemu-utils: tests/lab/install.sh).</summary>
public sealed class QemuImgDiskImagesTests : IDisposable
{
    private const long MiB = 1024 * 1024;
    private readonly string _dir = Directory.CreateTempSubdirectory("orch-qemuimg-").FullName;
    private readonly QemuImgDiskImages _images = new();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task CopyAsync_SparseRaw_CopiesContentKeepsHolesAndHashesLogicalBytes()
    {
        var source = await MakeSparseRawAsync("src.raw", 64 * MiB);
        var destination = Path.Combine(_dir, "dst.raw");
        var reports = new List<CopyProgress>();

        var result = await _images.CopyAsync(source, "raw", destination, new CopyOptions(), new SyncProgress<CopyProgress>(reports.Add));

        Assert.Equal(64 * MiB, result.BytesCopied);
        Assert.Equal(64 * MiB, new FileInfo(destination).Length);
        Assert.Equal(await HashFileAsync(source), result.Sha256);
        Assert.Equal(result.Sha256, await HashFileAsync(destination));
        Assert.Equal(result.Sha256, await _images.ComputeSha256Async(destination));
        Assert.True(AllocatedBytes(destination) <= 8 * MiB, $"copy is not sparse: {AllocatedBytes(destination)} bytes allocated");
        Assert.Equal(new CopyProgress(64 * MiB, 64 * MiB), reports[^1]);
    }

    [Fact]
    public async Task DataSha256_SparseCopyAndDenseFileOfTheSameContent_AgreeAndCatchAChangedByte()
    {
        var source = await MakeSparseRawAsync("digest.raw", 32 * MiB);
        var copy = Path.Combine(_dir, "digest-copy.raw");
        var dense = Path.Combine(_dir, "digest-dense.raw");
        await File.WriteAllBytesAsync(dense, await File.ReadAllBytesAsync(source)); // zeros written out: no holes

        var result = await _images.CopyAsync(source, "raw", copy, new CopyOptions { ComputeSha256 = false, ComputeDataSha256 = true });
        var ofCopy = await _images.ComputeDigestsAsync(copy);
        var ofDense = await _images.ComputeDigestsAsync(dense);

        Assert.Null(result.Sha256);
        Assert.Equal(ReferenceDataDigest(source), result.DataSha256);
        Assert.Equal(new ImageDigests(await HashFileAsync(source), result.DataSha256!), ofCopy);
        Assert.Equal(ofCopy, ofDense);
        Assert.True(AllocatedBytes(dense) > 16 * MiB, "the dense file should have its zeros allocated");

        // One byte changed inside data, and one byte written into a hole: both show.
        await using (var f = new FileStream(dense, FileMode.Open, FileAccess.Write))
        {
            f.Position = 100;
            f.WriteByte(0x5a);
        }

        await using (var f = new FileStream(copy, FileMode.Open, FileAccess.Write))
        {
            f.Position = 20 * MiB;
            f.WriteByte(1);
        }

        Assert.NotEqual(ofCopy.DataSha256, (await _images.ComputeDigestsAsync(dense)).DataSha256);
        Assert.NotEqual(ofCopy.DataSha256, (await _images.ComputeDigestsAsync(copy)).DataSha256);
    }

    [Fact]
    public async Task CopyAsync_Qcow2SameFormat_ByteCopyPassesCheck()
    {
        var source = Path.Combine(_dir, "src.qcow2");
        await _images.CreateAsync(source, "qcow2", 32 * MiB);
        await QemuIoWriteAsync(source, "0xab", 0, 3 * MiB);
        var destination = Path.Combine(_dir, "dst.qcow2");

        var result = await _images.CopyAsync(source, "qcow2", destination, new CopyOptions());

        Assert.Equal(await HashFileAsync(source), result.Sha256);
        Assert.Equal("qcow2", (await _images.InfoAsync(destination, "qcow2")).Format);
        var check = await _images.CheckAsync(destination, "qcow2");
        Assert.True(check.Clean, check.Output);
    }

    [Fact]
    public async Task CopyAsync_ToOtherFormat_ConvertsAndHashesTheResult()
    {
        var source = await MakeSparseRawAsync("conv.raw", 16 * MiB);
        var destination = Path.Combine(_dir, "conv.qcow2");

        var result = await _images.CopyAsync(source, "raw", destination, new CopyOptions { TargetFormat = "qcow2" });

        var info = await _images.InfoAsync(destination, "qcow2");
        Assert.Equal(("qcow2", 16 * MiB), (info.Format, info.VirtualSize));
        Assert.Equal(await HashFileAsync(destination), result.Sha256);
        Assert.True((await _images.CheckAsync(destination, "qcow2")).Clean);
    }

    [Fact]
    public async Task CopyAsync_DestinationExists_ThrowsFileExistsAndKeepsIt()
    {
        var source = await MakeSparseRawAsync("a.raw", 4 * MiB);
        var destination = Path.Combine(_dir, "existing.raw");
        await File.WriteAllTextAsync(destination, "keep me");

        var ex = await Assert.ThrowsAsync<HypervisorException>(() => _images.CopyAsync(source, "raw", destination, new CopyOptions()));

        Assert.Equal(HypervisorErrorKind.FileExists, ex.Kind);
        Assert.Equal("keep me", await File.ReadAllTextAsync(destination));
    }

    [Fact]
    public async Task CopyAsync_MissingSource_ThrowsFileNotFound()
    {
        var ex = await Assert.ThrowsAsync<HypervisorException>(() => _images.CopyAsync(Path.Combine(_dir, "nope.raw"), "raw", Path.Combine(_dir, "x.raw"), new CopyOptions()));

        Assert.Equal(HypervisorErrorKind.FileNotFound, ex.Kind);
    }

    [Fact]
    public async Task CopyAsync_BandwidthLimit_TakesAtLeastDataOverRate()
    {
        var source = Path.Combine(_dir, "dense.raw");
        await File.WriteAllBytesAsync(source, RandomNumberGenerator.GetBytes((int)(8 * MiB)));
        var sw = Stopwatch.StartNew();

        await _images.CopyAsync(source, "raw", Path.Combine(_dir, "paced.raw"), new CopyOptions { BandwidthBytesPerSecond = 16 * MiB });

        Assert.True(sw.Elapsed >= TimeSpan.FromMilliseconds(450), $"8 MiB at 16 MiB/s took only {sw.Elapsed.TotalMilliseconds:F0} ms");
    }

    [Fact]
    public async Task CopyAsync_Cancelled_ThrowsAndRemovesPartialDestination()
    {
        var source = Path.Combine(_dir, "slow.raw");
        await File.WriteAllBytesAsync(source, RandomNumberGenerator.GetBytes((int)(16 * MiB)));
        var destination = Path.Combine(_dir, "partial.raw");
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => _images.CopyAsync(source, "raw", destination, new CopyOptions { BandwidthBytesPerSecond = 8 * MiB }, cancellationToken: cts.Token));

        Assert.False(File.Exists(destination));
    }

    [Fact]
    public async Task CopyAsync_ConvertCancelled_KillsQemuImgAndRemovesPartialDestination()
    {
        var source = Path.Combine(_dir, "big.raw");
        await using (var f = new FileStream(source, FileMode.CreateNew))
        {
            for (var i = 0; i < 32; i++)
            {
                await f.WriteAsync(RandomNumberGenerator.GetBytes((int)(4 * MiB)));
            }
        }

        var destination = Path.Combine(_dir, "big.qcow2");
        using var cts = new CancellationTokenSource();
        var progress = new SyncProgress<CopyProgress>(_ => cts.Cancel());

        // Cancelled at qemu-img's first progress line, i.e. while it runs.
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => _images.CopyAsync(source, "raw", destination, new CopyOptions { TargetFormat = "qcow2" }, progress, cts.Token));

        Assert.False(File.Exists(destination));
        Assert.DoesNotContain(Process.GetProcessesByName("qemu-img"), p => HasArgument(p, destination));
    }

    [Fact]
    public async Task CreateInfoCommit_OverlayOnRawBase_CommitsDataIntoBase()
    {
        var baseImage = Path.Combine(_dir, "base.raw");
        var overlay = Path.Combine(_dir, "overlay.qcow2");
        await _images.CreateAsync(baseImage, "raw", 8 * MiB);
        await _images.CreateAsync(overlay, "qcow2", 0, baseImage, "raw");
        await QemuIoWriteAsync(overlay, "0x5a", MiB, MiB);

        var info = await _images.InfoAsync(overlay, "qcow2");
        Assert.Equal(("qcow2", baseImage, "raw", 8 * MiB), (info.Format, info.BackingFile, info.BackingFormat, info.VirtualSize));

        await _images.CommitAsync(overlay, [new DiskLayer(baseImage, "raw")]);

        var bytes = await File.ReadAllBytesAsync(baseImage);
        Assert.All(bytes.AsSpan((int)MiB, (int)MiB).ToArray(), b => Assert.Equal(0x5a, b));
        Assert.Equal(0, bytes[0]);
    }

    [Fact]
    public async Task CreateAsync_Exists_ThrowsFileExists()
    {
        var path = Path.Combine(_dir, "dup.qcow2");
        await _images.CreateAsync(path, "qcow2", MiB);

        var ex = await Assert.ThrowsAsync<HypervisorException>(() => _images.CreateAsync(path, "qcow2", MiB));

        Assert.Equal(HypervisorErrorKind.FileExists, ex.Kind);
    }

    [Fact]
    public async Task CheckAsync_RawImage_CleanBecauseNothingToCheck()
    {
        var path = await MakeSparseRawAsync("plain.raw", MiB);

        var check = await _images.CheckAsync(path, "raw");

        Assert.True(check.Clean);
        Assert.Contains("no consistency checks", check.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task CheckAsync_DamagedQcow2_NotClean()
    {
        var path = Path.Combine(_dir, "damaged.qcow2");
        await _images.CreateAsync(path, "qcow2", 8 * MiB);
        await QemuIoWriteAsync(path, "0x11", 0, 2 * MiB);
        await using (var f = new FileStream(path, FileMode.Open, FileAccess.Write))
        {
            // Overwrite the refcount table (cluster 1 for a fresh 64 KiB-cluster image) with garbage.
            f.Position = 64 * 1024;
            f.Write(Enumerable.Repeat((byte)0xff, 4096).ToArray());
        }

        var check = await _images.CheckAsync(path, "qcow2");

        Assert.False(check.Clean, check.Output);
        Assert.True(check.Errors > 0, check.Output);
    }

    [Fact]
    public async Task ListSnapshotsAsync_QemuImgSnapshot_ListsIt()
    {
        var path = Path.Combine(_dir, "snap.qcow2");
        await _images.CreateAsync(path, "qcow2", MiB);
        await RunAsync("qemu-img", "snapshot", "-c", "s1", path);

        var snapshot = Assert.Single(await _images.ListSnapshotsAsync(path, "qcow2"));

        Assert.Equal("s1", snapshot.Name);
        Assert.False(snapshot.HasMemory);
        Assert.True(snapshot.CreatedAt > DateTimeOffset.UtcNow.AddMinutes(-5));
    }

    [Fact]
    public async Task ExistsDeleteFreeSpace_Files_BehaveAsFileSystem()
    {
        var path = await MakeSparseRawAsync("gone.raw", MiB);

        Assert.True(await _images.ExistsAsync(path));
        await _images.DeleteAsync(path);
        await _images.DeleteAsync(path);
        Assert.False(await _images.ExistsAsync(path));
        Assert.True(await _images.FreeSpaceAsync(Path.Combine(_dir, "not", "yet", "there.raw")) > 0);
    }

    [Fact]
    public async Task InfoAndSha256_MissingFile_ThrowFileNotFound()
    {
        var info = await Assert.ThrowsAsync<HypervisorException>(() => _images.InfoAsync(Path.Combine(_dir, "missing.qcow2"), "qcow2"));
        var sha = await Assert.ThrowsAsync<HypervisorException>(() => _images.ComputeSha256Async(Path.Combine(_dir, "missing.qcow2")));

        Assert.Equal(HypervisorErrorKind.FileNotFound, info.Kind);
        Assert.Equal(HypervisorErrorKind.FileNotFound, sha.Kind);
    }

    private async Task<string> MakeSparseRawAsync(string name, long size)
    {
        var path = Path.Combine(_dir, name);
        await using var f = new FileStream(path, FileMode.CreateNew, FileAccess.Write);
        f.SetLength(size);
        var data = RandomNumberGenerator.GetBytes(64 * 1024);
        foreach (var offset in new[] { 0L, size / 3, size / 2 + 12345, size - data.Length })
        {
            f.Position = offset;
            await f.WriteAsync(data);
        }

        return path;
    }

    /// <summary>The data digest by its definition, written out plainly: each non-zero 4 KiB block after its offset.</summary>
    private static string ReferenceDataDigest(string path)
    {
        var bytes = File.ReadAllBytes(path);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        for (var offset = 0; offset < bytes.Length; offset += 4096)
        {
            var block = bytes.AsSpan(offset, Math.Min(4096, bytes.Length - offset));
            if (block.ContainsAnyExcept((byte)0))
            {
                hash.AppendData(BitConverter.GetBytes((long)offset));
                hash.AppendData(block);
            }
        }

        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    private static async Task<string> HashFileAsync(string path)
    {
        await using var f = File.OpenRead(path);
        return Convert.ToHexStringLower(await SHA256.HashDataAsync(f));
    }

    private static long AllocatedBytes(string path)
    {
        var psi = new ProcessStartInfo("stat") { RedirectStandardOutput = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add("%b %B");
        psi.ArgumentList.Add(path);
        using var p = Process.Start(psi)!;
        var parts = p.StandardOutput.ReadToEnd().Split(' ');
        p.WaitForExit();
        return long.Parse(parts[0], System.Globalization.CultureInfo.InvariantCulture) * long.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture);
    }

    private static bool HasArgument(Process process, string argument)
    {
        try
        {
            return File.ReadAllText($"/proc/{process.Id}/cmdline").Split('\0').Contains(argument);
        }
        catch (IOException)
        {
            return false;
        }
    }

    private static Task QemuIoWriteAsync(string image, string pattern, long offset, long length) =>
        RunAsync("qemu-io", "-c", $"write -P {pattern} {offset} {length}", image);

    private static async Task RunAsync(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        _ = await p.StandardOutput.ReadToEndAsync();
        await p.WaitForExitAsync();
        Assert.True(p.ExitCode == 0, $"{file} {string.Join(' ', args)}: {await err}");
    }

    /// <summary>Progress&lt;T&gt; posts to the thread pool; this records in order, synchronously.</summary>
    private sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
