using System.Buffers.Binary;
using System.Text;
using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Contract;
using Orchestrator.Hypervisor.Simulated;

namespace Orchestrator.UnitTests.Drivers;

/// <summary>
/// SimulatedOptions.WriteImageFiles (the demo's simulated host): every image the host names exists on disk, sparse, as
/// long as the host reports it, and a qcow2 file's header names the virtual size and the backing file of its chain.
/// </summary>
public sealed class SimulatedImageFilesTests : IDisposable
{
    private const long GiB = 1L << 30;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"orch-sim-files-{Guid.NewGuid():N}");

    public void Dispose()
    {
        if (Directory.Exists(_dir))
        {
            Directory.Delete(_dir, recursive: true);
        }
    }

    private SimulatedHypervisor NewHost(bool files) =>
        new SimulatedHypervisor(new SimulatedOptions { HostName = "demo-01", ImageDirectory = Path.Combine(_dir, "images"), WriteImageFiles = files }).SeedDemo();

    [Fact]
    public async Task SeedDemo_WithFiles_EveryLayerOfEveryChainIsAFileOfTheReportedSizeAndFormat()
    {
        await using var host = NewHost(files: true);
        var domains = await host.ListDomainsAsync();
        var layers = domains.SelectMany(d => d.Disks).SelectMany(disk => new[] { new DiskLayer(disk.SourcePath, disk.Format) }.Concat(disk.BackingChain)).Distinct().ToList();
        Assert.Equal(8, layers.Count); // 7 disks and web-1's template
        foreach (var layer in layers)
        {
            var info = await host.Images.InfoAsync(layer.Path, layer.Format);
            var file = new FileInfo(layer.Path);
            Assert.True(file.Exists, layer.Path);
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, file.UnixFileMode);
            if (layer.Format == "raw")
            {
                Assert.Equal(info.VirtualSize, file.Length);
            }
            else
            {
                Assert.Equal(info.ActualSize, file.Length);
                var header = ReadQcow2Header(layer.Path);
                Assert.Equal(info.VirtualSize, header.VirtualSize);
                Assert.Equal(info.BackingFile, header.BackingFile);
                Assert.Equal(info.BackingFormat, header.BackingFormat);
            }
        }

        // web-1's vda is a linked clone: the file names its template, which exists.
        var vda = domains.Single(d => d.Name == "web-1").Disks.Single(d => d.Target == "vda");
        var template = Assert.Single(vda.BackingChain);
        Assert.Equal(template.Path, ReadQcow2Header(vda.SourcePath).BackingFile);
        Assert.Equal(4 * GiB, new FileInfo(Path.Combine(_dir, "images", "web-1-vdb.raw")).Length);
    }

    [Fact]
    public async Task OverlayCopyDelete_WithFiles_FilesFollowTheHost()
    {
        await using var host = NewHost(files: true);
        var web1 = (await host.GetDomainAsync("web-1"))!;
        var vdb = web1.Disks.Single(d => d.Target == "vdb");
        var overlay = Path.Combine(_dir, "images", "web-1-vdb.orch-run1.qcow2");

        await host.CreateExternalSnapshotAsync("web-1", [new OverlaySpec("vdb", overlay)]);
        var header = ReadQcow2Header(overlay);
        Assert.Equal((vdb.SourcePath, "raw", 4 * GiB), (header.BackingFile, header.BackingFormat, header.VirtualSize));

        var copy = Path.Combine(_dir, "backups", "web-1", "run1", "vdb.raw");
        var result = await host.Images.CopyAsync(vdb.SourcePath, "raw", copy, new CopyOptions());
        Assert.Equal(result.BytesCopied, new FileInfo(copy).Length);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, new DirectoryInfo(Path.GetDirectoryName(copy)!).UnixFileMode);

        await host.StartActiveCommitAsync("web-1", "vdb", vdb.SourcePath);
        await host.WaitForBlockJobReadyAsync("web-1", "vdb");
        await host.PivotAsync("web-1", "vdb");
        await host.Images.DeleteAsync(overlay);
        Assert.False(File.Exists(overlay));
        Assert.True(File.Exists(vdb.SourcePath));
    }

    [Fact]
    public async Task ExistingLinkAtAnImagePath_IsReplacedNeverFollowed()
    {
        var victim = Path.Combine(_dir, "victim");
        Directory.CreateDirectory(Path.Combine(_dir, "images"));
        await File.WriteAllTextAsync(victim, "not ours");
        File.CreateSymbolicLink(Path.Combine(_dir, "images", "web-2-vda.qcow2"), victim);

        await using var host = NewHost(files: true);
        Assert.Equal("not ours", await File.ReadAllTextAsync(victim));
        Assert.Null(new FileInfo(Path.Combine(_dir, "images", "web-2-vda.qcow2")).LinkTarget);
    }

    [Fact]
    public async Task Default_NoFilesAreWritten()
    {
        await using var host = NewHost(files: false);
        await host.CreateExternalSnapshotAsync("web-2", [new OverlaySpec("vda", Path.Combine(_dir, "images", "web-2-vda.orch-x.qcow2"))]);
        Assert.False(Directory.Exists(_dir));
    }

    [Theory]
    [InlineData(64L << 20)]
    [InlineData(100L << 30)]
    [InlineData(5L << 40)]
    public void Qcow2_EmptyImage_RefcountsCoverHeaderTablesAndL1(long size)
    {
        var image = SimulatedImageFiles.Qcow2(size, null, null);
        var l1Size = BinaryPrimitives.ReadUInt32BigEndian(image.AsSpan(36));
        Assert.Equal((size + (512L << 20) - 1) / (512L << 20), (long)l1Size);
        Assert.Equal((3L << 16) + (l1Size * 8L), image.LongLength);
        var clusters = (image.Length + 65535) / 65536;
        for (var c = 0; c < clusters; c++)
        {
            Assert.Equal(1, BinaryPrimitives.ReadUInt16BigEndian(image.AsSpan((2 << 16) + (c * 2))));
        }

        Assert.Equal(0, BinaryPrimitives.ReadUInt16BigEndian(image.AsSpan((2 << 16) + (clusters * 2))));
    }

    private static (long VirtualSize, string? BackingFile, string? BackingFormat) ReadQcow2Header(string path)
    {
        var h = new byte[65536];
        using (var stream = File.OpenRead(path))
        {
            stream.ReadExactly(h);
        }

        Assert.Equal(0x514649FBu, BinaryPrimitives.ReadUInt32BigEndian(h));
        Assert.Equal(3u, BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(4)));
        var offset = (int)BinaryPrimitives.ReadUInt64BigEndian(h.AsSpan(8));
        var length = (int)BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(16));
        string? format = null;
        for (var at = 104; ;)
        {
            var type = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(at));
            var len = (int)BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(at + 4));
            if (type == 0)
            {
                break;
            }

            if (type == 0xE2792ACA)
            {
                format = Encoding.ASCII.GetString(h, at + 8, len);
            }

            at += 8 + ((len + 7) & ~7);
        }

        return ((long)BinaryPrimitives.ReadUInt64BigEndian(h.AsSpan(24)), offset == 0 ? null : Encoding.UTF8.GetString(h, offset, length), format);
    }
}

/// <summary>The hypervisor contract on the simulated driver with its image files written (the demo's setting).</summary>
public sealed class SimulatedHypervisorFilesContractTests : HypervisorContract, IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"orch-sim-contract-{Guid.NewGuid():N}");
    private readonly SimulatedHypervisor _hypervisor;

    public SimulatedHypervisorFilesContractTests()
    {
        _hypervisor = new(new SimulatedOptions { HostName = "contract", ImageDirectory = Path.Combine(_dir, "images"), WriteImageFiles = true });
        _hypervisor.AddDomain(RunningVm, DomainPowerState.Running, [("vda", "raw", 64 * MiB), ("vdb", "qcow2", 64 * MiB)]);
        _hypervisor.AddDomain(ShutOffVm, DomainPowerState.ShutOff, [("vda", "qcow2", 64 * MiB)]);
    }

    protected override IHypervisor Hypervisor => _hypervisor;

    protected override string RunningVm => "contract-running";

    protected override string ShutOffVm => "contract-off";

    protected override TimeSpan EventTimeout => TimeSpan.FromSeconds(10);

    protected override string NewScratchDir() => Path.Combine(_dir, $"scratch-{Guid.NewGuid():N}");

    protected override Task LetTheGuestWriteAsync(string domain)
    {
        _hypervisor.SimulateGuestWrites(domain, 4 * MiB);
        return Task.CompletedTask;
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        await _hypervisor.DisposeAsync();
        if (Directory.Exists(_dir))
        {
            Directory.Delete(_dir, recursive: true);
        }
    }
}
