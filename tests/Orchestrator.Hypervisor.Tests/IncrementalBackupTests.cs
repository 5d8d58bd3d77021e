using System.Diagnostics;
using Orchestrator.Hypervisor.Tests.Lab;

namespace Orchestrator.Hypervisor.Tests;

/// <summary>
/// Incremental backups on real libvirtd + QEMU at the driver level: push-mode backup jobs with checkpoints into files,
/// each point of a chain flattened and checked by the counter guest's records, and the ways a bitmap is lost (QEMU
/// killed, removed with qemu-img while the VM is off, checkpoint metadata lost with an undefine).
/// </summary>
[Collection(LabCollection.Name)]
public sealed class IncrementalBackupTests(LabFixture lab) : IAsyncLifetime
{
    private const string Vm = "hvt-inc";

    private IHypervisor Hypervisor => lab.Hypervisor;

    public async Task InitializeAsync()
    {
        await lab.RunScriptAsync("vm.sh", "delete", LabFixture.HostName, Vm);
        await lab.RunScriptAsync("vm.sh", "create", LabFixture.HostName, Vm, "--disks", "qcow2:64M", "--interval-ms", "50");
        await lab.WaitForGuestAsync(Vm, 1);
    }

    public async Task DisposeAsync() => await lab.RunScriptAsync("vm.sh", "delete", LabFixture.HostName, Vm);

    [Fact]
    public async Task FullThenTwoIncrementals_EachPointFlattensToAConsistentImageAndCopiesOnlyTheChanges()
    {
        var dir = lab.NewWorkDir("inc");
        var points = new List<(string Image, BackupJobStatus Job, long SeqBefore)>();
        string? parent = null;
        for (var i = 0; i < 3; i++)
        {
            var seq = await lab.WaitForGuestAsync(Vm, points.Count == 0 ? 1 : points[^1].SeqBefore + 20);
            var image = Path.Combine(dir, $"p{i}.qcow2");
            await Hypervisor.StartBackupJobAsync(Vm, new BackupJobSpec(
                [new BackupJobDisk("vda", image, "qcow2")], Incremental: parent, NewCheckpoint: $"inc-{i}", CheckpointDisks: ["vda"]));
            var job = await WaitAsync();
            Assert.True(job.State == BackupJobState.Completed, $"point {i}: {job.State}: {job.Error}");
            if (parent is not null)
            {
                await Hypervisor.Images.SetBackingAsync(image, Path.GetFileName(points[^1].Image), "qcow2");
            }

            points.Add((image, job, seq));
            parent = $"inc-{i}";
        }

        // Every point restores: the chain up to it flattened, formats named, into one standalone image.
        var lastSeq = -1L;
        for (var i = 0; i < points.Count; i++)
        {
            var chain = Enumerable.Range(0, i).Reverse().Select(j => new DiskLayer(points[j].Image, "qcow2")).ToList();
            var flat = Path.Combine(dir, $"flat-{i}.raw");
            await Hypervisor.Images.CopyAsync(points[i].Image, "qcow2", flat, new CopyOptions { SourceBackingChain = chain, TargetFormat = "raw", ComputeSha256 = false });
            var (consistent, report) = await lab.CounterCheckAsync(flat);
            Assert.True(consistent, $"point {i}: {report}");
            var seq = ParseMaxSeq(report);
            Assert.True(seq >= points[i].SeqBefore && seq > lastSeq, $"point {i}: max seq {seq}, guest was at {points[i].SeqBefore}, previous point {lastSeq}");
            lastSeq = seq;
        }

        // The incrementals carry only what the guest wrote in between (its counter ring), not the disk.
        Assert.All(points.Skip(1), p => Assert.True(p.Job.BytesTotal * 4 < points[0].Job.BytesTotal || p.Job.BytesTotal <= 1024 * 1024, $"incremental copied {p.Job.BytesTotal} B, full {points[0].Job.BytesTotal} B"));
        var checkpoints = await Hypervisor.ListCheckpointsAsync(Vm);
        Assert.Equal(["inc-0", "inc-1", "inc-2"], checkpoints.Select(c => c.Name).ToList());
        Assert.Equal([null, "inc-0", "inc-1"], checkpoints.Select(c => c.Parent).ToList());
    }

    [Fact]
    public async Task QemuKilled_BitmapWasNeverStored_IncrementalRefusedAsCheckpointNotFound_AndANewFullWorks()
    {
        var dir = lab.NewWorkDir("inc-kill");
        await Hypervisor.StartBackupJobAsync(Vm, new BackupJobSpec([new BackupJobDisk("vda", Path.Combine(dir, "full.qcow2"), "qcow2")], NewCheckpoint: "k1", CheckpointDisks: ["vda"]));
        Assert.Equal(BackupJobState.Completed, (await WaitAsync()).State);

        KillQemu();
        await WaitForStateAsync(DomainPowerState.ShutOff);
        var vda = (await Hypervisor.GetDomainAsync(Vm)).Disks[0];
        Assert.DoesNotContain(await Hypervisor.Images.ListBitmapsAsync(vda.SourcePath, "qcow2"), b => b.Name == "k1");
        Assert.Equal("k1", Assert.Single(await Hypervisor.ListCheckpointsAsync(Vm)).Name); // libvirt still believes in it

        await Hypervisor.StartDomainAsync(Vm);
        var error = await Assert.ThrowsAsync<HypervisorException>(() => Hypervisor.StartBackupJobAsync(
            Vm, new BackupJobSpec([new BackupJobDisk("vda", Path.Combine(dir, "inc.qcow2"), "qcow2")], Incremental: "k1", NewCheckpoint: "k2", CheckpointDisks: ["vda"])));
        Assert.Equal(HypervisorErrorKind.CheckpointNotFound, error.Kind);
        Assert.Contains("bitmap", error.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(Path.Combine(dir, "inc.qcow2")));

        await Hypervisor.DeleteCheckpointAsync(Vm, "k1", metadataOnly: true);
        await Hypervisor.StartBackupJobAsync(Vm, new BackupJobSpec([new BackupJobDisk("vda", Path.Combine(dir, "full2.qcow2"), "qcow2")], NewCheckpoint: "k2", CheckpointDisks: ["vda"]));
        Assert.Equal(BackupJobState.Completed, (await WaitAsync()).State);
    }

    [Fact]
    public async Task BitmapRemovedWithQemuImgWhileOff_IncrementalRefused_UndefineKeepsTheBitmapAndRedefinitionRestoresTheChain()
    {
        var dir = lab.NewWorkDir("inc-off");
        await Hypervisor.StartBackupJobAsync(Vm, new BackupJobSpec([new BackupJobDisk("vda", Path.Combine(dir, "full.qcow2"), "qcow2")], NewCheckpoint: "r1", CheckpointDisks: ["vda"]));
        Assert.Equal(BackupJobState.Completed, (await WaitAsync()).State);
        var saved = Assert.Single(await Hypervisor.ListCheckpointsAsync(Vm));
        var domainXml = await Hypervisor.GetDomainXmlAsync(Vm, inactive: true);

        // A clean stop (destroy sends SIGTERM first) stores the bitmap in the image; undefine drops libvirt's record.
        await Hypervisor.DestroyDomainAsync(Vm);
        var vda = (await Hypervisor.GetDomainAsync(Vm)).Disks[0];
        var stored = Assert.Single(await Hypervisor.Images.ListBitmapsAsync(vda.SourcePath, "qcow2"));
        Assert.Equal("r1", stored.Name);
        Assert.False(stored.InUse);
        await Hypervisor.UndefineDomainAsync(Vm);
        await Hypervisor.DefineDomainAsync(domainXml);
        Assert.Empty(await Hypervisor.ListCheckpointsAsync(Vm));
        await Hypervisor.RedefineCheckpointAsync(Vm, saved.Xml);
        await Hypervisor.StartDomainAsync(Vm);
        await lab.WaitForGuestAsync(Vm, 1);
        await Hypervisor.StartBackupJobAsync(Vm, new BackupJobSpec([new BackupJobDisk("vda", Path.Combine(dir, "inc.qcow2"), "qcow2")], Incremental: "r1", NewCheckpoint: "r2", CheckpointDisks: ["vda"]));
        var incremental = await WaitAsync();
        Assert.True(incremental.State == BackupJobState.Completed, $"{incremental.State}: {incremental.Error}");

        // Now the bitmaps are removed behind libvirt's back while the VM is off: the next incremental is refused.
        await Hypervisor.DestroyDomainAsync(Vm);
        foreach (var bitmap in await Hypervisor.Images.ListBitmapsAsync(vda.SourcePath, "qcow2"))
        {
            await RunAsync("qemu-img", "bitmap", "--remove", "-f", "qcow2", vda.SourcePath, bitmap.Name);
        }

        Assert.Empty(await Hypervisor.Images.ListBitmapsAsync(vda.SourcePath, "qcow2"));
        await Hypervisor.StartDomainAsync(Vm);
        var error = await Assert.ThrowsAsync<HypervisorException>(() => Hypervisor.StartBackupJobAsync(
            Vm, new BackupJobSpec([new BackupJobDisk("vda", Path.Combine(dir, "inc2.qcow2"), "qcow2")], Incremental: "r2")));
        Assert.Equal(HypervisorErrorKind.CheckpointNotFound, error.Kind);
    }

    private async Task<BackupJobStatus> WaitAsync()
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            var status = await Hypervisor.GetBackupJobAsync(Vm);
            if (status.Ended)
            {
                return status;
            }

            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(120), $"backup job still {status.State}");
            await Task.Delay(50);
        }
    }

    private async Task WaitForStateAsync(DomainPowerState state)
    {
        var sw = Stopwatch.StartNew();
        while ((await Hypervisor.GetDomainAsync(Vm)).State != state)
        {
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60), $"{Vm} never became {state}");
            await Task.Delay(100);
        }
    }

    /// <summary>SIGKILL to the guest's QEMU (found by its -name guest=VM argument): no clean close, no bitmap stored.</summary>
    private static void KillQemu()
    {
        var killed = 0;
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid))
            {
                continue;
            }

            string cmdline;
            try
            {
                cmdline = File.ReadAllText(Path.Combine(dir, "cmdline")).Replace('\0', ' ');
            }
            catch (IOException)
            {
                continue;
            }
            catch (UnauthorizedAccessException)
            {
                continue;
            }

            if (cmdline.Contains("qemu-system", StringComparison.Ordinal) && cmdline.Contains($"guest={Vm},", StringComparison.Ordinal))
            {
                Process.GetProcessById(pid).Kill();
                killed++;
            }
        }

        Assert.Equal(1, killed);
    }

    private static long ParseMaxSeq(string report)
    {
        using var json = System.Text.Json.JsonDocument.Parse(report);
        return json.RootElement.GetProperty("max").GetInt64();
    }

    private static async Task RunAsync(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var arg in args)
        {
            psi.ArgumentList.Add(arg);
        }

        using var process = Process.Start(psi)!;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(cts.Token);
        Assert.True(process.ExitCode == 0, $"{file} {string.Join(' ', args)}: {await process.StandardError.ReadToEndAsync()}");
    }
}
