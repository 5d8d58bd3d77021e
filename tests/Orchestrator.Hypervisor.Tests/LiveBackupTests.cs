using System.Collections.Concurrent;
using System.Diagnostics;
using System.Security.Cryptography;
using Orchestrator.Hypervisor.Tests.Lab;
using Xunit.Abstractions;

namespace Orchestrator.Hypervisor.Tests;

/// <summary>The live-backup primitives on a real QEMU guest that keeps writing to both its disks.</summary>
[Collection(LabCollection.Name)]
public sealed class LiveBackupTests(LabFixture lab, ITestOutputHelper output)
{
    private const string Vm = LabFixture.BackupVm;
    private static readonly TimeSpan EventTimeout = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task LiveBackup_TwoDiskRunningGuest_NeverPausesAndCopiesAreConsistent()
    {
        var hv = lab.Hypervisor;
        using var events = new EventRecorder(hv);
        await lab.WaitForGuestAsync(Vm, 3);
        var before = await hv.GetDomainAsync(Vm);
        Assert.Equal(DomainPowerState.Running, before.State);
        Assert.Equal(["vda:raw", "vdb:qcow2"], before.Disks.Select(d => $"{d.Target}:{d.Format}").ToList());
        Assert.All(before.Disks, d => Assert.Empty(d.BackingChain));
        var bases = before.Disks.ToDictionary(d => d.Target);

        // The state is sampled all along: the guest must never leave Running.
        using var stopSampling = new CancellationTokenSource();
        var states = new ConcurrentBag<DomainPowerState>();
        var sampler = Task.Run(async () =>
        {
            while (!stopSampling.IsCancellationRequested)
            {
                states.Add((await hv.GetDomainAsync(Vm)).State);
                await Task.Delay(20);
            }
        });

        var dir = lab.NewWorkDir("live");
        var overlays = before.Disks.Select(d => new OverlaySpec(d.Target, Path.Combine(dir, $"{Vm}-{d.Target}.orch-test.qcow2"))).ToList();
        var sw = Stopwatch.StartNew();
        await hv.CreateExternalSnapshotAsync(Vm, overlays);
        var overlayMs = sw.Elapsed.TotalMilliseconds;

        var onOverlays = await hv.GetDomainAsync(Vm);
        foreach (var overlay in overlays)
        {
            var disk = onOverlays.Disks.Single(d => d.Target == overlay.Target);
            Assert.Equal(overlay.OverlayPath, disk.SourcePath);
            Assert.Equal("qcow2", disk.Format);
            var below = Assert.Single(disk.BackingChain);
            Assert.Equal(bases[overlay.Target].SourcePath, below.Path);
            Assert.Equal(bases[overlay.Target].Format, below.Format);
        }

        // Copy the frozen bases while the guest writes into the overlays.
        var copies = new Dictionary<string, string>();
        foreach (var (target, disk) in bases)
        {
            var copy = Path.Combine(dir, $"backup-{target}.{disk.Format}");
            var result = await hv.Images.CopyAsync(disk.SourcePath, disk.Format, copy, new CopyOptions());
            Assert.Equal(new FileInfo(disk.SourcePath).Length, result.BytesCopied);
            await using var read = File.OpenRead(copy);
            Assert.Equal(result.Sha256, Convert.ToHexStringLower(await SHA256.HashDataAsync(read)));
            copies[target] = copy;
        }

        var copyMs = sw.Elapsed.TotalMilliseconds - overlayMs;
        var seqDuringOverlay = await lab.WaitForGuestAsync(Vm, 0);
        await lab.WaitForGuestAsync(Vm, seqDuringOverlay + 2);

        // Commit both overlays back, driven by events.
        var commitWatch = Stopwatch.StartNew();
        await Task.WhenAll(bases.Keys.Select(t => hv.StartActiveCommitAsync(Vm, t, bases[t].SourcePath)));
        await Task.WhenAll(bases.Keys.Select(t => hv.WaitForBlockJobReadyAsync(Vm, t).WaitAsync(EventTimeout)));
        var readyMs = commitWatch.Elapsed.TotalMilliseconds;
        await Task.WhenAll(bases.Keys.Select(t => hv.PivotAsync(Vm, t).WaitAsync(EventTimeout)));
        var pivotMs = commitWatch.Elapsed.TotalMilliseconds;

        var after = await hv.GetDomainAsync(Vm);
        foreach (var disk in after.Disks)
        {
            Assert.Equal(bases[disk.Target].SourcePath, disk.SourcePath);
            Assert.Equal(bases[disk.Target].Format, disk.Format);
            Assert.Empty(disk.BackingChain);
            Assert.Null(await hv.GetBlockJobAsync(Vm, disk.Target));
        }

        foreach (var overlay in overlays)
        {
            await hv.Images.DeleteAsync(overlay.OverlayPath);
            Assert.False(await hv.Images.ExistsAsync(overlay.OverlayPath));
        }

        await stopSampling.CancelAsync();
        await sampler;
        await lab.WaitForGuestAsync(Vm, seqDuringOverlay + 4);
        output.WriteLine($"overlays {overlayMs:F1} ms, copies {copyMs:F0} ms, commit ready {readyMs:F1} ms, pivoted {pivotMs:F1} ms; {states.Count} state samples");

        // Never paused: every sample Running, and no Suspended event for this guest.
        Assert.All(states, s => Assert.Equal(DomainPowerState.Running, s));
        Assert.DoesNotContain(events.For(Vm), e => e.Lifecycle is LifecycleEventType.Suspended or LifecycleEventType.Stopped);

        // READY then COMPLETED, per disk, as events of an active commit.
        foreach (var target in bases.Keys)
        {
            var jobEvents = events.For(Vm).Where(e => e.Kind == DomainEventKind.BlockJob && e.Target == target).ToList();
            Assert.Equal([BlockJobEventStatus.Ready, BlockJobEventStatus.Completed], jobEvents.Select(e => e.Status!.Value).ToList());
            Assert.All(jobEvents, e => Assert.Equal(BlockJobKind.ActiveCommit, e.Job));
        }

        // The copies are sound images and one consistent point in time across both disks.
        foreach (var (target, copy) in copies)
        {
            var check = await hv.Images.CheckAsync(copy, bases[target].Format);
            Assert.True(check.Clean, check.Output);
        }

        var (consistent, report) = await lab.CounterCheckAsync(copies["vda"], copies["vdb"]);
        output.WriteLine(report);
        Assert.True(consistent, report);
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public async Task AbortBlockJobAsync_ReadyCommit_LeavesOverlayActiveThenPivotCleansUp()
    {
        var hv = lab.Hypervisor;
        using var events = new EventRecorder(hv);
        var dir = lab.NewWorkDir("abort");
        var overlay = Path.Combine(dir, "vdb.orch-abort.qcow2");
        var baseDisk = (await hv.GetDomainAsync(Vm)).Disks.Single(d => d.Target == "vdb");

        await hv.CreateExternalSnapshotAsync(Vm, [new OverlaySpec("vdb", overlay)]);
        try
        {
            await hv.StartActiveCommitAsync(Vm, "vdb", baseDisk.SourcePath);
            await hv.WaitForBlockJobReadyAsync(Vm, "vdb").WaitAsync(EventTimeout);
            var job = await hv.GetBlockJobAsync(Vm, "vdb");
            Assert.NotNull(job);
            Assert.Equal(BlockJobKind.ActiveCommit, job.Kind);
            Assert.True(job.Ready);

            await hv.AbortBlockJobAsync(Vm, "vdb").WaitAsync(EventTimeout);

            Assert.Null(await hv.GetBlockJobAsync(Vm, "vdb"));
            var disk = (await hv.GetDomainAsync(Vm)).Disks.Single(d => d.Target == "vdb");
            Assert.Equal(overlay, disk.SourcePath);
            Assert.Equal(baseDisk.SourcePath, Assert.Single(disk.BackingChain).Path);
        }
        finally
        {
            // Back to the base, whatever happened above.
            if ((await hv.GetBlockJobAsync(Vm, "vdb")) is null)
            {
                await hv.StartActiveCommitAsync(Vm, "vdb", baseDisk.SourcePath);
            }

            await hv.WaitForBlockJobReadyAsync(Vm, "vdb").WaitAsync(EventTimeout);
            await hv.PivotAsync(Vm, "vdb").WaitAsync(EventTimeout);
        }

        Assert.Equal(baseDisk.SourcePath, (await hv.GetDomainAsync(Vm)).Disks.Single(d => d.Target == "vdb").SourcePath);
        var statuses = events.For(Vm).Where(e => e.Target == "vdb").Select(e => e.Status).ToList();
        Assert.Equal(BlockJobEventStatus.Ready, statuses[0]);
        Assert.Contains(statuses[1], new BlockJobEventStatus?[] { BlockJobEventStatus.Canceled, BlockJobEventStatus.Completed });
        Assert.Equal([BlockJobEventStatus.Ready, BlockJobEventStatus.Completed], statuses.Skip(2).ToList());
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public async Task WaitAndPivot_JobStartedByAnotherConnection_CompleteLikeAfterARestart()
    {
        // What recovery sees after a silo restart: a commit this connection never started, ready already.
        var hv = lab.Hypervisor;
        var dir = lab.NewWorkDir("recover");
        var overlay = Path.Combine(dir, "vda.orch-recover.qcow2");
        var baseDisk = (await hv.GetDomainAsync(Vm)).Disks.Single(d => d.Target == "vda");
        await hv.CreateExternalSnapshotAsync(Vm, [new OverlaySpec("vda", overlay)]);
        await using (var earlier = await Libvirt.LibvirtHypervisor.ConnectAsync(lab.Uri))
        {
            await earlier.StartActiveCommitAsync(Vm, "vda", baseDisk.SourcePath, bandwidthBytesPerSecond: 64L * 1024 * 1024);
            await earlier.WaitForBlockJobReadyAsync(Vm, "vda").WaitAsync(EventTimeout);
        }

        var sw = Stopwatch.StartNew();
        await hv.WaitForBlockJobReadyAsync(Vm, "vda").WaitAsync(EventTimeout);
        var readyMs = sw.Elapsed.TotalMilliseconds;
        await hv.PivotAsync(Vm, "vda").WaitAsync(EventTimeout);

        output.WriteLine($"ready (by job info) after {readyMs:F1} ms, pivoted after {sw.Elapsed.TotalMilliseconds:F1} ms");
        Assert.True(readyMs < 1000, $"a job that is ready already took {readyMs:F0} ms");
        var disk = (await hv.GetDomainAsync(Vm)).Disks.Single(d => d.Target == "vda");
        Assert.Equal(baseDisk.SourcePath, disk.SourcePath);
        Assert.Empty(disk.BackingChain);
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public async Task StartActiveCommitAsync_JobRunning_ThrowsBlockJobActive()
    {
        var hv = lab.Hypervisor;
        var dir = lab.NewWorkDir("twice");
        await hv.CreateExternalSnapshotAsync(Vm, [new OverlaySpec("vdb", Path.Combine(dir, "vdb.orch-twice.qcow2"))]);
        try
        {
            await hv.StartActiveCommitAsync(Vm, "vdb", null);

            var ex = await Assert.ThrowsAsync<HypervisorException>(() => hv.StartActiveCommitAsync(Vm, "vdb", null));

            Assert.Equal(HypervisorErrorKind.BlockJobActive, ex.Kind);
        }
        finally
        {
            await hv.WaitForBlockJobReadyAsync(Vm, "vdb").WaitAsync(EventTimeout);
            await hv.PivotAsync(Vm, "vdb").WaitAsync(EventTimeout);
        }

        Assert.Empty((await hv.GetDomainAsync(Vm)).Disks.Single(d => d.Target == "vdb").BackingChain);
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public async Task CreateExternalSnapshotAsync_OverlayPathExists_ThrowsFileExistsAndLeavesChain()
    {
        var hv = lab.Hypervisor;
        var dir = lab.NewWorkDir("exists");
        var taken = Path.Combine(dir, "taken.qcow2");
        await File.WriteAllTextAsync(taken, "not an overlay");

        var ex = await Assert.ThrowsAsync<HypervisorException>(() => hv.CreateExternalSnapshotAsync(Vm, [new OverlaySpec("vda", Path.Combine(dir, "fresh.qcow2")), new OverlaySpec("vdb", taken)]));

        Assert.Equal(HypervisorErrorKind.FileExists, ex.Kind);
        Assert.Contains(taken, ex.Message, StringComparison.Ordinal);
        Assert.All((await hv.GetDomainAsync(Vm)).Disks, d => Assert.Empty(d.BackingChain));
        Assert.False(File.Exists(Path.Combine(dir, "fresh.qcow2")));
        Assert.Equal("not an overlay", await File.ReadAllTextAsync(taken));
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public async Task StartActiveCommitAsync_NoOverlay_ThrowsInvalidArgument()
    {
        var ex = await Assert.ThrowsAsync<HypervisorException>(() => lab.Hypervisor.StartActiveCommitAsync(Vm, "vda", null));

        Assert.Equal(HypervisorErrorKind.InvalidArgument, ex.Kind);
        Assert.Contains("no backing image", ex.Message, StringComparison.Ordinal);
        Assert.Null(await lab.Hypervisor.GetBlockJobAsync(Vm, "vda"));
    }

    [Fact]
    public async Task PivotAndWait_NoBlockJob_ThrowNoBlockJob()
    {
        var pivot = await Assert.ThrowsAsync<HypervisorException>(() => lab.Hypervisor.PivotAsync(Vm, "vdb"));
        var wait = await Assert.ThrowsAsync<HypervisorException>(() => lab.Hypervisor.WaitForBlockJobReadyAsync(Vm, "vdb"));
        var abort = await Assert.ThrowsAsync<HypervisorException>(() => lab.Hypervisor.AbortBlockJobAsync(Vm, "vdb"));

        Assert.Equal(HypervisorErrorKind.NoBlockJob, pivot.Kind);
        Assert.Equal(HypervisorErrorKind.NoBlockJob, wait.Kind);
        Assert.Equal(HypervisorErrorKind.NoBlockJob, abort.Kind);
    }

    [Fact]
    public async Task DiskOperations_UnknownDiskOrDomain_ThrowTypedErrors()
    {
        var hv = lab.Hypervisor;
        var dir = lab.NewWorkDir("unknown");

        var noDisk = await Assert.ThrowsAsync<HypervisorException>(() => hv.CreateExternalSnapshotAsync(Vm, [new OverlaySpec("vdz", Path.Combine(dir, "z.qcow2"))]));
        var noDiskJob = await Assert.ThrowsAsync<HypervisorException>(() => hv.GetBlockJobAsync(Vm, "vdz"));
        var noDomain = await Assert.ThrowsAsync<HypervisorException>(() => hv.StartActiveCommitAsync("no-such-vm", "vda", null));

        Assert.Equal(HypervisorErrorKind.DiskNotFound, noDisk.Kind);
        Assert.Equal(HypervisorErrorKind.DiskNotFound, noDiskJob.Kind);
        Assert.Equal(HypervisorErrorKind.DomainNotFound, noDomain.Kind);
        Assert.Equal(42, noDomain.LibvirtCode);
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public async Task FreezeFileSystemsAsync_NoGuestAgent_ThrowsAgentUnavailable()
    {
        var ex = await Assert.ThrowsAsync<HypervisorException>(() => lab.Hypervisor.FreezeFileSystemsAsync(Vm));

        Assert.Equal(HypervisorErrorKind.AgentUnavailable, ex.Kind);
        Assert.NotNull(ex.LibvirtCode);
        output.WriteLine(ex.Message);
    }

    [Fact]
    public async Task CreateInternalSnapshotAsync_RawDisk_RefusedWithReason()
    {
        var ex = await Assert.ThrowsAsync<HypervisorException>(() => lab.Hypervisor.CreateInternalSnapshotAsync(Vm, "never"));

        Assert.Equal(HypervisorErrorKind.UnsupportedDiskFormat, ex.Kind);
        Assert.Contains("disk vda is raw", ex.Message, StringComparison.Ordinal);
        Assert.Contains("live backup", ex.Message, StringComparison.Ordinal);
        Assert.Empty(await lab.Hypervisor.ListInternalSnapshotsAsync(Vm));
    }
}
