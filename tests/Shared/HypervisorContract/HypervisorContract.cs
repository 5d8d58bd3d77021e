using System.Collections.Concurrent;
using System.Xml.Linq;

namespace Orchestrator.Hypervisor.Contract;

/// <summary>
/// The behaviour of <see cref="IHypervisor"/> (and its <see cref="IDiskImages"/>) that the workflows rely on, written
/// once and run against every driver: a concrete subclass per driver supplies the hypervisor and two domains, and
/// inherits every test. SimulatedHypervisorContractTests (tests/Orchestrator.UnitTests, always runs) and
/// LibvirtHypervisorContractTests (tests/Orchestrator.Hypervisor.Tests, real libvirtd + QEMU of the test lab) must
/// both pass: where they disagree, the driver that differs from real libvirt is wrong.
/// </summary>
/// <remarks>
/// Each test leaves both domains as it found them (running domain on its base images, no block job; shut-off domain
/// shut off, no snapshot), so a driver may share one pair of domains across the suite. Paths are absolute paths on
/// the driver's host; the images of the simulated driver exist only in memory.
/// </remarks>
public abstract class HypervisorContract
{
    protected const long MiB = 1024 * 1024;

    protected abstract IHypervisor Hypervisor { get; }

    /// <summary>A running domain with exactly two disks and no backing chains: vda raw, vdb qcow2 (64 MiB each).</summary>
    protected abstract string RunningVm { get; }

    /// <summary>A shut-off domain with exactly one disk and no backing chain: vda qcow2 (64 MiB), no internal snapshots.</summary>
    protected abstract string ShutOffVm { get; }

    /// <summary>How long a test waits for an event or a block job (TCG guests are slow).</summary>
    protected virtual TimeSpan EventTimeout => TimeSpan.FromSeconds(60);

    /// <summary>A new, empty directory (absolute path) for overlays and copies on the driver's host.</summary>
    protected abstract string NewScratchDir();

    // ---- domains: listing, lookup, definition ----

    [Fact]
    public async Task ListDomainsAsync_Host_ListsBothDomainsWithStatesAndDisks()
    {
        var domains = await Hypervisor.ListDomainsAsync();

        var running = Assert.Single(domains, d => d.Name == RunningVm);
        var off = Assert.Single(domains, d => d.Name == ShutOffVm);
        Assert.Equal(DomainPowerState.Running, running.State);
        Assert.True(running.IsActive);
        Assert.Equal(DomainPowerState.ShutOff, off.State);
        Assert.False(off.IsActive);
        Assert.NotEqual(running.Uuid, off.Uuid);
        Assert.Equal(["vda:raw", "vdb:qcow2"], running.Disks.Select(d => $"{d.Target}:{d.Format}").ToList());
        Assert.Equal(["vda:qcow2"], off.Disks.Select(d => $"{d.Target}:{d.Format}").ToList());
        Assert.All(running.Disks.Concat(off.Disks), d =>
        {
            Assert.Empty(d.BackingChain);
            Assert.Equal(1, d.ChainDepth);
            Assert.True(d.ChainDescribed);
            Assert.True(Path.IsPathFullyQualified(d.SourcePath), d.SourcePath);
        });
    }

    [Fact]
    public async Task GetDomainAsync_KnownDomain_EqualsItsListEntry()
    {
        var listed = Assert.Single(await Hypervisor.ListDomainsAsync(), d => d.Name == RunningVm);
        var got = await Hypervisor.GetDomainAsync(RunningVm);

        Assert.Equal(listed.Uuid, got.Uuid);
        Assert.Equal(listed.State, got.State);
        Assert.Equal(Describe(listed), Describe(got));
        Assert.True(got.MemoryKiB > 0);
        Assert.True(got.VirtualCpus > 0);
    }

    [Fact]
    public async Task DomainCalls_UnknownDomain_ThrowDomainNotFound()
    {
        const string missing = "contract-no-such-domain";
        var dir = NewScratchDir();
        var calls = new (string Call, Func<Task> Act)[]
        {
            ("GetDomain", () => Hypervisor.GetDomainAsync(missing)),
            ("GetDomainXml", () => Hypervisor.GetDomainXmlAsync(missing)),
            ("Start", () => Hypervisor.StartDomainAsync(missing)),
            ("Destroy", () => Hypervisor.DestroyDomainAsync(missing)),
            ("Suspend", () => Hypervisor.SuspendDomainAsync(missing)),
            ("Resume", () => Hypervisor.ResumeDomainAsync(missing)),
            ("Undefine", () => Hypervisor.UndefineDomainAsync(missing)),
            ("ExternalSnapshot", () => Hypervisor.CreateExternalSnapshotAsync(missing, [new OverlaySpec("vda", Path.Combine(dir, "vda.qcow2"))])),
            ("GetBlockJob", () => Hypervisor.GetBlockJobAsync(missing, "vda")),
            ("StartActiveCommit", () => Hypervisor.StartActiveCommitAsync(missing, "vda", null)),
            ("CreateInternalSnapshot", () => Hypervisor.CreateInternalSnapshotAsync(missing, "c1")),
            ("ListInternalSnapshots", () => Hypervisor.ListInternalSnapshotsAsync(missing)),
            ("RevertInternalSnapshot", () => Hypervisor.RevertInternalSnapshotAsync(missing, "c1")),
            ("DeleteInternalSnapshot", () => Hypervisor.DeleteInternalSnapshotAsync(missing, "c1")),
            ("Freeze", () => Hypervisor.FreezeFileSystemsAsync(missing)),
        };

        foreach (var (call, act) in calls)
        {
            var error = await Assert.ThrowsAsync<HypervisorException>(act);
            Assert.True(error.Kind == HypervisorErrorKind.DomainNotFound, $"{call}: {error.Kind}: {error.Message}");
        }
    }

    [Fact]
    public async Task DefineAndUndefine_CopyOfShutOffDomain_RaisesDefinedThenUndefinedAndIsGone()
    {
        var copyName = $"{ShutOffVm}-contract-copy";
        var xml = XElement.Parse(await Hypervisor.GetDomainXmlAsync(ShutOffVm, inactive: true));
        xml.Element("name")!.Value = copyName;
        xml.Element("uuid")?.Remove();
        using var events = new Recorder(Hypervisor);

        var name = await Hypervisor.DefineDomainAsync(xml.ToString());
        try
        {
            Assert.Equal(copyName, name);
            var copy = await Hypervisor.GetDomainAsync(copyName);
            Assert.Equal(DomainPowerState.ShutOff, copy.State);
            Assert.NotEqual((await Hypervisor.GetDomainAsync(ShutOffVm)).Uuid, copy.Uuid);
            Assert.Equal(Describe(await Hypervisor.GetDomainAsync(ShutOffVm)), Describe(copy));
            await events.WaitForAsync(copyName, LifecycleEventType.Defined, EventTimeout);
        }
        finally
        {
            await Hypervisor.UndefineDomainAsync(copyName);
        }

        await events.WaitForAsync(copyName, LifecycleEventType.Undefined, EventTimeout);
        var gone = await Assert.ThrowsAsync<HypervisorException>(() => Hypervisor.GetDomainAsync(copyName));
        Assert.Equal(HypervisorErrorKind.DomainNotFound, gone.Kind);
        Assert.DoesNotContain(await Hypervisor.ListDomainsAsync(), d => d.Name == copyName);
    }

    // ---- power state and lifecycle events ----

    [Fact]
    public async Task StartSuspendResumeDestroy_ShutOffDomain_ChangesStateWithEventsInOrder()
    {
        using var events = new Recorder(Hypervisor);
        try
        {
            await Hypervisor.StartDomainAsync(ShutOffVm);
            await events.WaitForAsync(ShutOffVm, LifecycleEventType.Started, EventTimeout);
            Assert.Equal(DomainPowerState.Running, (await Hypervisor.GetDomainAsync(ShutOffVm)).State);

            var again = await Assert.ThrowsAsync<HypervisorException>(() => Hypervisor.StartDomainAsync(ShutOffVm));
            Assert.Equal(HypervisorErrorKind.InvalidDomainState, again.Kind);

            await Hypervisor.SuspendDomainAsync(ShutOffVm);
            await events.WaitForAsync(ShutOffVm, LifecycleEventType.Suspended, EventTimeout);
            Assert.Equal(DomainPowerState.Paused, (await Hypervisor.GetDomainAsync(ShutOffVm)).State);

            await Hypervisor.ResumeDomainAsync(ShutOffVm);
            await events.WaitForAsync(ShutOffVm, LifecycleEventType.Resumed, EventTimeout, after: LifecycleEventType.Suspended);
            Assert.Equal(DomainPowerState.Running, (await Hypervisor.GetDomainAsync(ShutOffVm)).State);

            var notPaused = await Assert.ThrowsAsync<HypervisorException>(() => Hypervisor.ResumeDomainAsync(ShutOffVm));
            Assert.Equal(HypervisorErrorKind.InvalidDomainState, notPaused.Kind);
        }
        finally
        {
            await StopAsync(ShutOffVm);
        }

        await events.WaitForAsync(ShutOffVm, LifecycleEventType.Stopped, EventTimeout);
        Assert.Equal(DomainPowerState.ShutOff, (await Hypervisor.GetDomainAsync(ShutOffVm)).State);

        // The four calls' events in call order (a driver may add others in between, e.g. a Resumed when QEMU starts).
        var seen = events.Lifecycle(ShutOffVm);
        var order = new[] { LifecycleEventType.Started, LifecycleEventType.Suspended, LifecycleEventType.Resumed, LifecycleEventType.Stopped };
        var at = 0;
        foreach (var type in seen)
        {
            if (at < order.Length && type == order[at])
            {
                at++;
            }
        }

        Assert.True(at == order.Length, $"lifecycle events {string.Join(", ", seen)} do not hold {string.Join(", ", order)} in order");
        Assert.All(events.For(ShutOffVm), e => Assert.Equal(DomainEventKind.Lifecycle, e.Kind));
    }

    [Fact]
    public async Task StartDomainAsync_Paused_LeavesDomainPausedUntilResumed()
    {
        try
        {
            await Hypervisor.StartDomainAsync(ShutOffVm, paused: true);
            Assert.Equal(DomainPowerState.Paused, (await Hypervisor.GetDomainAsync(ShutOffVm)).State);
            Assert.True((await Hypervisor.GetDomainAsync(ShutOffVm)).IsActive);
            await Hypervisor.ResumeDomainAsync(ShutOffVm);
            Assert.Equal(DomainPowerState.Running, (await Hypervisor.GetDomainAsync(ShutOffVm)).State);
        }
        finally
        {
            await StopAsync(ShutOffVm);
        }
    }

    [Fact]
    public async Task RuntimeCalls_ShutOffDomain_ThrowInvalidDomainState()
    {
        var calls = new (string Call, Func<Task> Act)[]
        {
            ("Suspend", () => Hypervisor.SuspendDomainAsync(ShutOffVm)),
            ("Resume", () => Hypervisor.ResumeDomainAsync(ShutOffVm)),
            ("Destroy", () => Hypervisor.DestroyDomainAsync(ShutOffVm)),
            ("GetBlockJob", () => Hypervisor.GetBlockJobAsync(ShutOffVm, "vda")),
            ("StartActiveCommit", () => Hypervisor.StartActiveCommitAsync(ShutOffVm, "vda", null)),
            ("WaitForBlockJobReady", () => Hypervisor.WaitForBlockJobReadyAsync(ShutOffVm, "vda")),
            ("Pivot", () => Hypervisor.PivotAsync(ShutOffVm, "vda")),
            ("Abort", () => Hypervisor.AbortBlockJobAsync(ShutOffVm, "vda")),
            ("Freeze", () => Hypervisor.FreezeFileSystemsAsync(ShutOffVm)),
            ("Thaw", () => Hypervisor.ThawFileSystemsAsync(ShutOffVm)),
        };

        foreach (var (call, act) in calls)
        {
            var error = await Assert.ThrowsAsync<HypervisorException>(act);
            Assert.True(error.Kind == HypervisorErrorKind.InvalidDomainState, $"{call}: {error.Kind}: {error.Message}");
        }

        Assert.Equal(DomainPowerState.ShutOff, (await Hypervisor.GetDomainAsync(ShutOffVm)).State);
    }

    [Fact]
    public async Task FreezeFileSystemsAsync_RunningDomainWithoutAgent_ThrowsAgentUnavailable()
    {
        var error = await Assert.ThrowsAsync<HypervisorException>(() => Hypervisor.FreezeFileSystemsAsync(RunningVm));
        Assert.Equal(HypervisorErrorKind.AgentUnavailable, error.Kind);
        Assert.Equal(DomainPowerState.Running, (await Hypervisor.GetDomainAsync(RunningVm)).State);
    }

    // ---- external snapshots, block commit, pivot ----

    [Fact]
    public async Task ExternalSnapshot_EveryDisk_OverlaysQcow2OnTopOfEachChainNamedWithFormat()
    {
        var before = await Hypervisor.GetDomainAsync(RunningVm);
        var dir = NewScratchDir();
        var overlays = before.Disks.Select(d => new OverlaySpec(d.Target, Path.Combine(dir, $"{d.Target}.orch-contract.qcow2"))).ToList();
        using var events = new Recorder(Hypervisor);

        await Hypervisor.CreateExternalSnapshotAsync(RunningVm, overlays);
        try
        {
            var after = await Hypervisor.GetDomainAsync(RunningVm);
            Assert.Equal(DomainPowerState.Running, after.State);
            foreach (var overlay in overlays)
            {
                var was = before.Disks.Single(d => d.Target == overlay.Target);
                var disk = after.Disks.Single(d => d.Target == overlay.Target);
                Assert.Equal(overlay.OverlayPath, disk.SourcePath);
                Assert.Equal("qcow2", disk.Format);
                Assert.Equal(was.ChainDepth + 1, disk.ChainDepth);
                Assert.Equal(new DiskLayer(was.SourcePath, was.Format), disk.BackingChain[0]);
                Assert.True(disk.ChainDescribed);
                Assert.True(await Hypervisor.Images.ExistsAsync(overlay.OverlayPath));

                // The overlay file names its backing image and that image's format (nothing is left to probing).
                var info = await Hypervisor.Images.InfoAsync(overlay.OverlayPath, "qcow2");
                Assert.Equal("qcow2", info.Format);
                Assert.Equal(was.SourcePath, info.BackingFile);
                Assert.Equal(was.Format, info.BackingFormat);
                Assert.Equal((await Hypervisor.Images.InfoAsync(was.SourcePath, was.Format)).VirtualSize, info.VirtualSize);
                Assert.Null(await Hypervisor.GetBlockJobAsync(RunningVm, overlay.Target));
            }

            // The guest is never paused for it.
            Assert.DoesNotContain(events.Lifecycle(RunningVm), t => t is LifecycleEventType.Suspended or LifecycleEventType.Stopped);
        }
        finally
        {
            await CommitBackAsync(RunningVm, before);
        }

        Assert.Equal(Describe(before), Describe(await Hypervisor.GetDomainAsync(RunningVm)));
        foreach (var overlay in overlays)
        {
            await Hypervisor.Images.DeleteAsync(overlay.OverlayPath);
            Assert.False(await Hypervisor.Images.ExistsAsync(overlay.OverlayPath));
        }
    }

    [Fact]
    public async Task ActiveCommit_OverlayOnOneDisk_ReadyThenPivotBackToTheOriginalChainByEvents()
    {
        var before = await Hypervisor.GetDomainAsync(RunningVm);
        var vdb = before.Disks.Single(d => d.Target == "vdb");
        var overlay = Path.Combine(NewScratchDir(), "vdb.orch-commit.qcow2");
        using var events = new Recorder(Hypervisor);

        await Hypervisor.CreateExternalSnapshotAsync(RunningVm, [new OverlaySpec("vdb", overlay)]);
        try
        {
            // Only the disk named gets an overlay.
            var vda = (await Hypervisor.GetDomainAsync(RunningVm)).Disks.Single(d => d.Target == "vda");
            Assert.Equal(Describe(before.Disks.Single(d => d.Target == "vda")), Describe(vda));

            await Hypervisor.StartActiveCommitAsync(RunningVm, "vdb", vdb.SourcePath);
            await Hypervisor.WaitForBlockJobReadyAsync(RunningVm, "vdb").WaitAsync(EventTimeout);
            var job = await Hypervisor.GetBlockJobAsync(RunningVm, "vdb");
            Assert.NotNull(job);
            Assert.Equal("vdb", job.Target);
            Assert.Equal(BlockJobKind.ActiveCommit, job.Kind);
            Assert.True(job.Ready);
            Assert.Equal(job.End, job.Current);

            // A second job on the same disk is refused while the first one runs.
            var second = await Assert.ThrowsAsync<HypervisorException>(() => Hypervisor.StartActiveCommitAsync(RunningVm, "vdb", vdb.SourcePath));
            Assert.Equal(HypervisorErrorKind.BlockJobActive, second.Kind);

            // Waiting again on a job that is READY already returns at once.
            await Hypervisor.WaitForBlockJobReadyAsync(RunningVm, "vdb").WaitAsync(EventTimeout);
            await Hypervisor.PivotAsync(RunningVm, "vdb").WaitAsync(EventTimeout);
        }
        finally
        {
            await CommitBackAsync(RunningVm, before);
        }

        var after = await Hypervisor.GetDomainAsync(RunningVm);
        Assert.Equal(Describe(before), Describe(after));
        Assert.Null(await Hypervisor.GetBlockJobAsync(RunningVm, "vdb"));
        var jobEvents = events.For(RunningVm).Where(e => e.Kind == DomainEventKind.BlockJob).ToList();
        Assert.Equal(["vdb:ActiveCommit:Ready", "vdb:ActiveCommit:Completed"], jobEvents.Select(e => $"{e.Target}:{e.Job}:{e.Status}").ToList());
        Assert.DoesNotContain(events.Lifecycle(RunningVm), t => t is LifecycleEventType.Suspended or LifecycleEventType.Stopped);

        // The pivoted overlay is no longer in any chain and can go.
        await Hypervisor.Images.DeleteAsync(overlay);
        Assert.False(await Hypervisor.Images.ExistsAsync(overlay));
        await Hypervisor.Images.DeleteAsync(overlay); // deleting what is gone is not an error
    }

    [Fact]
    public async Task ActiveCommit_TwoStackedOverlays_MergesExactlyOneLayerPerCommit()
    {
        var before = await Hypervisor.GetDomainAsync(RunningVm);
        var baseDisk = before.Disks.Single(d => d.Target == "vdb");
        var dir = NewScratchDir();
        var first = Path.Combine(dir, "vdb.first.qcow2");
        var second = Path.Combine(dir, "vdb.second.qcow2");

        await Hypervisor.CreateExternalSnapshotAsync(RunningVm, [new OverlaySpec("vdb", first)]);
        try
        {
            await Hypervisor.CreateExternalSnapshotAsync(RunningVm, [new OverlaySpec("vdb", second)]);
            var stacked = (await Hypervisor.GetDomainAsync(RunningVm)).Disks.Single(d => d.Target == "vdb");
            Assert.Equal(3, stacked.ChainDepth);
            Assert.Equal([$"{first}:qcow2", $"{baseDisk.SourcePath}:{baseDisk.Format}"], stacked.BackingChain.Select(l => $"{l.Path}:{l.Format}").ToList());

            // Only the image right below the top may be the base.
            var deeper = await Assert.ThrowsAsync<HypervisorException>(() => Hypervisor.StartActiveCommitAsync(RunningVm, "vdb", baseDisk.SourcePath));
            Assert.Equal(HypervisorErrorKind.InvalidArgument, deeper.Kind);

            await Hypervisor.StartActiveCommitAsync(RunningVm, "vdb", first);
            await Hypervisor.WaitForBlockJobReadyAsync(RunningVm, "vdb").WaitAsync(EventTimeout);
            await Hypervisor.PivotAsync(RunningVm, "vdb").WaitAsync(EventTimeout);

            var merged = (await Hypervisor.GetDomainAsync(RunningVm)).Disks.Single(d => d.Target == "vdb");
            Assert.Equal(first, merged.SourcePath);
            Assert.Equal("qcow2", merged.Format);
            Assert.Equal([new DiskLayer(baseDisk.SourcePath, baseDisk.Format)], merged.BackingChain);
        }
        finally
        {
            await CommitBackAsync(RunningVm, before);
        }

        Assert.Equal(Describe(before), Describe(await Hypervisor.GetDomainAsync(RunningVm)));
        await Hypervisor.Images.DeleteAsync(second);
        await Hypervisor.Images.DeleteAsync(first);
    }

    [Fact]
    public async Task AbortBlockJobAsync_ReadyCommit_LeavesTheOverlayActive()
    {
        var before = await Hypervisor.GetDomainAsync(RunningVm);
        var vdb = before.Disks.Single(d => d.Target == "vdb");
        var overlay = Path.Combine(NewScratchDir(), "vdb.orch-abort.qcow2");
        using var events = new Recorder(Hypervisor);

        await Hypervisor.CreateExternalSnapshotAsync(RunningVm, [new OverlaySpec("vdb", overlay)]);
        try
        {
            await Hypervisor.StartActiveCommitAsync(RunningVm, "vdb", vdb.SourcePath);
            await Hypervisor.WaitForBlockJobReadyAsync(RunningVm, "vdb").WaitAsync(EventTimeout);
            await Hypervisor.AbortBlockJobAsync(RunningVm, "vdb").WaitAsync(EventTimeout);

            Assert.Null(await Hypervisor.GetBlockJobAsync(RunningVm, "vdb"));
            var disk = (await Hypervisor.GetDomainAsync(RunningVm)).Disks.Single(d => d.Target == "vdb");
            Assert.Equal(overlay, disk.SourcePath);
            Assert.Equal([new DiskLayer(vdb.SourcePath, vdb.Format)], disk.BackingChain);
            var again = await Assert.ThrowsAsync<HypervisorException>(() => Hypervisor.AbortBlockJobAsync(RunningVm, "vdb"));
            Assert.Equal(HypervisorErrorKind.NoBlockJob, again.Kind);
        }
        finally
        {
            await CommitBackAsync(RunningVm, before);
        }

        // READY, then the abort's end: libvirt reports an aborted ready active commit as Canceled or as Completed.
        var statuses = events.For(RunningVm).Where(e => e.Kind == DomainEventKind.BlockJob).Select(e => e.Status).ToList();
        Assert.Equal(BlockJobEventStatus.Ready, statuses[0]);
        Assert.Contains(statuses[1], new BlockJobEventStatus?[] { BlockJobEventStatus.Canceled, BlockJobEventStatus.Completed });
        Assert.Equal(Describe(before), Describe(await Hypervisor.GetDomainAsync(RunningVm)));
        await Hypervisor.Images.DeleteAsync(overlay);
    }

    [Fact]
    public async Task BlockJobCalls_DiskWithoutOverlayOrJob_AreRefusedWithTheirKinds()
    {
        var vdb = (await Hypervisor.GetDomainAsync(RunningVm)).Disks.Single(d => d.Target == "vdb");

        Assert.Null(await Hypervisor.GetBlockJobAsync(RunningVm, "vdb"));
        await AssertKindAsync(HypervisorErrorKind.InvalidArgument, () => Hypervisor.StartActiveCommitAsync(RunningVm, "vdb", null));
        await AssertKindAsync(HypervisorErrorKind.InvalidArgument, () => Hypervisor.StartActiveCommitAsync(RunningVm, "vdb", vdb.SourcePath));
        await AssertKindAsync(HypervisorErrorKind.NoBlockJob, () => Hypervisor.WaitForBlockJobReadyAsync(RunningVm, "vdb"));
        await AssertKindAsync(HypervisorErrorKind.NoBlockJob, () => Hypervisor.PivotAsync(RunningVm, "vdb"));
        await AssertKindAsync(HypervisorErrorKind.NoBlockJob, () => Hypervisor.AbortBlockJobAsync(RunningVm, "vdb"));
    }

    [Fact]
    public async Task DiskCalls_UnknownDisk_ThrowDiskNotFound()
    {
        var dir = NewScratchDir();
        await AssertKindAsync(HypervisorErrorKind.DiskNotFound, () => Hypervisor.GetBlockJobAsync(RunningVm, "vdz"));
        await AssertKindAsync(HypervisorErrorKind.DiskNotFound, () => Hypervisor.StartActiveCommitAsync(RunningVm, "vdz", null));
        await AssertKindAsync(HypervisorErrorKind.DiskNotFound, () => Hypervisor.WaitForBlockJobReadyAsync(RunningVm, "vdz"));

        // Atomic: one unknown disk and nothing is snapshotted, not even the known one.
        var before = await Hypervisor.GetDomainAsync(RunningVm);
        await AssertKindAsync(
            HypervisorErrorKind.DiskNotFound,
            () => Hypervisor.CreateExternalSnapshotAsync(RunningVm, [new OverlaySpec("vdb", Path.Combine(dir, "vdb.qcow2")), new OverlaySpec("vdz", Path.Combine(dir, "vdz.qcow2"))]));
        Assert.Equal(Describe(before), Describe(await Hypervisor.GetDomainAsync(RunningVm)));
        Assert.False(await Hypervisor.Images.ExistsAsync(Path.Combine(dir, "vdb.qcow2")));
    }

    [Fact]
    public async Task ExternalSnapshot_BadRequests_RefusedAndNothingChanges()
    {
        var before = await Hypervisor.GetDomainAsync(RunningVm);
        var dir = NewScratchDir();
        var existing = Path.Combine(dir, "exists.qcow2");
        await Hypervisor.Images.CreateAsync(existing, "qcow2", 64 * MiB);

        await AssertKindAsync(HypervisorErrorKind.InvalidArgument, () => Hypervisor.CreateExternalSnapshotAsync(RunningVm, []));
        await AssertKindAsync(HypervisorErrorKind.FileExists, () => Hypervisor.CreateExternalSnapshotAsync(RunningVm, [new OverlaySpec("vdb", existing)]));
        await AssertKindAsync(
            HypervisorErrorKind.InvalidArgument,
            () => Hypervisor.CreateExternalSnapshotAsync(RunningVm, [new OverlaySpec("vdb", Path.Combine(dir, "a.qcow2")), new OverlaySpec("vdb", Path.Combine(dir, "b.qcow2"))]));
        await AssertKindAsync(HypervisorErrorKind.InvalidArgument, () => Hypervisor.CreateExternalSnapshotAsync(RunningVm, [new OverlaySpec("vdb", "relative/vdb.qcow2")]));

        Assert.Equal(Describe(before), Describe(await Hypervisor.GetDomainAsync(RunningVm)));
        Assert.False(await Hypervisor.Images.ExistsAsync(Path.Combine(dir, "a.qcow2")));
        await Hypervisor.Images.DeleteAsync(existing);
    }

    [Fact]
    public async Task ExternalSnapshot_ShutOffDomain_OverlayBecomesTheActiveQcow2Image()
    {
        // libvirt does not read the images of an inactive domain: the real driver reads the chain from the image
        // headers (every format named), so both drivers show the shut-off overlay over its base.
        var before = await Hypervisor.GetDomainAsync(ShutOffVm);
        var vda = Assert.Single(before.Disks);
        var overlay = Path.Combine(NewScratchDir(), "vda.offline.qcow2");

        await Hypervisor.CreateExternalSnapshotAsync(ShutOffVm, [new OverlaySpec("vda", overlay)]);
        var after = await Hypervisor.GetDomainAsync(ShutOffVm);
        var disk = Assert.Single(after.Disks);
        Assert.Equal(overlay, disk.SourcePath);
        Assert.Equal("qcow2", disk.Format);
        Assert.Equal(DomainPowerState.ShutOff, after.State);
        var info = await Hypervisor.Images.InfoAsync(overlay, "qcow2");
        Assert.Equal(vda.SourcePath, info.BackingFile);
        Assert.Equal(vda.Format, info.BackingFormat);
        Assert.Equal([new DiskLayer(vda.SourcePath, vda.Format)], disk.BackingChain);
        Assert.Equal(2, disk.ChainDepth);
        Assert.True(disk.ChainDescribed);
        Assert.Equal(Describe(after), Describe(Assert.Single(await Hypervisor.ListDomainsAsync(), d => d.Name == ShutOffVm)));

        // An image a domain uses is never deleted: the shut-off domain's overlay (active) and its base (backing).
        var active = await Assert.ThrowsAsync<HypervisorException>(() => Hypervisor.Images.DeleteAsync(overlay));
        Assert.Equal(HypervisorErrorKind.ImageInUse, active.Kind);
        Assert.Contains(overlay, active.Message, StringComparison.Ordinal);
        Assert.Contains(ShutOffVm, active.Message, StringComparison.Ordinal);
        var backing = await Assert.ThrowsAsync<HypervisorException>(() => Hypervisor.Images.DeleteAsync(vda.SourcePath));
        Assert.Equal(HypervisorErrorKind.ImageInUse, backing.Kind);
        Assert.Contains(vda.SourcePath, backing.Message, StringComparison.Ordinal);
        Assert.Contains(ShutOffVm, backing.Message, StringComparison.Ordinal);
        Assert.True(await Hypervisor.Images.ExistsAsync(overlay));
        Assert.True(await Hypervisor.Images.ExistsAsync(vda.SourcePath));

        // Back as it was: the domain pointed at its base again (how a workflow undoes an offline overlay).
        var xml = XElement.Parse(await Hypervisor.GetDomainXmlAsync(ShutOffVm, inactive: true));
        var element = xml.Descendants("disk").Single(d => d.Element("target")?.Attribute("dev")?.Value == "vda");
        element.Element("source")!.SetAttributeValue("file", vda.SourcePath);
        element.Elements("backingStore").Remove();
        await Hypervisor.DefineDomainAsync(xml.ToString());
        Assert.Equal(Describe(before), Describe(await Hypervisor.GetDomainAsync(ShutOffVm)));
        await Hypervisor.Images.DeleteAsync(overlay);
    }

    [Fact]
    public async Task DeleteAsync_ImagesOfBothDomains_RefusedImageInUseNamingPathAndDomain()
    {
        var running = await Hypervisor.GetDomainAsync(RunningVm);
        var off = await Hypervisor.GetDomainAsync(ShutOffVm);
        foreach (var (domain, disk) in running.Disks.Select(d => (RunningVm, d)).Concat(off.Disks.Select(d => (ShutOffVm, d))))
        {
            var error = await Assert.ThrowsAsync<HypervisorException>(() => Hypervisor.Images.DeleteAsync(disk.SourcePath));
            Assert.True(error.Kind == HypervisorErrorKind.ImageInUse, $"{domain}/{disk.Target}: {error.Kind}: {error.Message}");
            Assert.Contains(disk.SourcePath, error.Message, StringComparison.Ordinal);
            Assert.Contains($"'{domain}'", error.Message, StringComparison.Ordinal);
            Assert.Contains(disk.Target, error.Message, StringComparison.Ordinal);
            Assert.True(await Hypervisor.Images.ExistsAsync(disk.SourcePath), disk.SourcePath);
        }

        Assert.Equal(Describe(running), Describe(await Hypervisor.GetDomainAsync(RunningVm)));
        Assert.Equal(Describe(off), Describe(await Hypervisor.GetDomainAsync(ShutOffVm)));

        // An image no domain uses is deleted as before.
        var free = Path.Combine(NewScratchDir(), "free.qcow2");
        await Hypervisor.Images.CreateAsync(free, "qcow2", MiB);
        await Hypervisor.Images.DeleteAsync(free);
        Assert.False(await Hypervisor.Images.ExistsAsync(free));
    }

    // ---- internal checkpoints ----

    [Fact]
    public async Task InternalSnapshot_RawDisk_RefusedUnsupportedFormatAndGuestNeverPaused()
    {
        using var events = new Recorder(Hypervisor);

        var error = await Assert.ThrowsAsync<HypervisorException>(() => Hypervisor.CreateInternalSnapshotAsync(RunningVm, "contract-raw"));

        Assert.Equal(HypervisorErrorKind.UnsupportedDiskFormat, error.Kind);
        Assert.Contains("vda", error.Message, StringComparison.Ordinal);
        Assert.Contains("raw", error.Message, StringComparison.Ordinal);
        Assert.Empty(await Hypervisor.ListInternalSnapshotsAsync(RunningVm));
        Assert.Equal(DomainPowerState.Running, (await Hypervisor.GetDomainAsync(RunningVm)).State);
        Assert.DoesNotContain(events.Lifecycle(RunningVm), t => t is LifecycleEventType.Suspended);
    }

    [Fact]
    public async Task InternalSnapshot_ShutOffQcow2_DiskOnlyCreateListRevertDelete()
    {
        var vda = Assert.Single((await Hypervisor.GetDomainAsync(ShutOffVm)).Disks);
        Assert.Empty(await Hypervisor.ListInternalSnapshotsAsync(ShutOffVm));
        try
        {
            var first = await Hypervisor.CreateInternalSnapshotAsync(ShutOffVm, "contract-1", "first");
            var second = await Hypervisor.CreateInternalSnapshotAsync(ShutOffVm, "contract-2");

            Assert.Equal("contract-1", first.Name);
            Assert.Equal("first", first.Description);
            Assert.False(first.HasMemory);
            Assert.Equal(DomainPowerState.ShutOff, first.StateAtSnapshot);
            Assert.Null(second.Description);
            Assert.Equal(["contract-1", "contract-2"], (await Hypervisor.ListInternalSnapshotsAsync(ShutOffVm)).Select(s => s.Name).ToList());
            Assert.Equal(first, (await Hypervisor.ListInternalSnapshotsAsync(ShutOffVm))[0]);

            // They live inside the qcow2 image itself.
            Assert.Equal(["contract-1", "contract-2"], (await Hypervisor.Images.ListSnapshotsAsync(vda.SourcePath, vda.Format)).Select(s => s.Name).ToList());

            await AssertKindAsync(HypervisorErrorKind.SnapshotExists, () => Hypervisor.CreateInternalSnapshotAsync(ShutOffVm, "contract-1"));
            await AssertKindAsync(HypervisorErrorKind.SnapshotNotFound, () => Hypervisor.RevertInternalSnapshotAsync(ShutOffVm, "contract-none"));

            await Hypervisor.RevertInternalSnapshotAsync(ShutOffVm, "contract-1");
            Assert.Equal(DomainPowerState.ShutOff, (await Hypervisor.GetDomainAsync(ShutOffVm)).State);

            await Hypervisor.DeleteInternalSnapshotAsync(ShutOffVm, "contract-2");
            Assert.Equal(["contract-1"], (await Hypervisor.ListInternalSnapshotsAsync(ShutOffVm)).Select(s => s.Name).ToList());
        }
        finally
        {
            foreach (var snapshot in await Hypervisor.ListInternalSnapshotsAsync(ShutOffVm))
            {
                await Hypervisor.DeleteInternalSnapshotAsync(ShutOffVm, snapshot.Name);
            }
        }

        Assert.Empty(await Hypervisor.ListInternalSnapshotsAsync(ShutOffVm));
        Assert.Empty(await Hypervisor.Images.ListSnapshotsAsync(vda.SourcePath, vda.Format));
        await AssertKindAsync(HypervisorErrorKind.SnapshotNotFound, () => Hypervisor.DeleteInternalSnapshotAsync(ShutOffVm, "contract-1"));
    }

    [Fact]
    public async Task InternalSnapshot_RunningQcow2_SavesMemoryPausesBrieflyAndRevertsToRequestedState()
    {
        using var events = new Recorder(Hypervisor);
        await Hypervisor.StartDomainAsync(ShutOffVm);
        try
        {
            var created = await Hypervisor.CreateInternalSnapshotAsync(ShutOffVm, "contract-mem", "with memory");

            Assert.True(created.HasMemory);
            Assert.Equal(DomainPowerState.Running, created.StateAtSnapshot);
            Assert.Equal(DomainPowerState.Running, (await Hypervisor.GetDomainAsync(ShutOffVm)).State);
            Assert.Equal(created, Assert.Single(await Hypervisor.ListInternalSnapshotsAsync(ShutOffVm)));
            var vda = Assert.Single((await Hypervisor.GetDomainAsync(ShutOffVm)).Disks);
            var inImage = Assert.Single(await Hypervisor.Images.ListSnapshotsAsync(vda.SourcePath, vda.Format));
            Assert.True(inImage.HasMemory);
            Assert.True(inImage.VmStateSize > 0);

            // Saving memory pauses the guest: Suspended, then Resumed.
            await events.WaitForAsync(ShutOffVm, LifecycleEventType.Resumed, EventTimeout, after: LifecycleEventType.Suspended);

            await Hypervisor.RevertInternalSnapshotAsync(ShutOffVm, "contract-mem", RevertTarget.Paused);
            Assert.Equal(DomainPowerState.Paused, (await Hypervisor.GetDomainAsync(ShutOffVm)).State);
            await Hypervisor.RevertInternalSnapshotAsync(ShutOffVm, "contract-mem", RevertTarget.Running);
            Assert.Equal(DomainPowerState.Running, (await Hypervisor.GetDomainAsync(ShutOffVm)).State);

            await Hypervisor.DeleteInternalSnapshotAsync(ShutOffVm, "contract-mem");
            Assert.Empty(await Hypervisor.ListInternalSnapshotsAsync(ShutOffVm));
        }
        finally
        {
            await StopAsync(ShutOffVm);
            foreach (var snapshot in await Hypervisor.ListInternalSnapshotsAsync(ShutOffVm))
            {
                await Hypervisor.DeleteInternalSnapshotAsync(ShutOffVm, snapshot.Name);
            }
        }
    }

    // ---- disk images ----

    [Fact]
    public async Task CopyAsync_FrozenBasesUnderOverlays_SameSizeSparseAndChecksumsMatch()
    {
        var before = await Hypervisor.GetDomainAsync(RunningVm);
        var dir = NewScratchDir();
        await Hypervisor.CreateExternalSnapshotAsync(RunningVm, [.. before.Disks.Select(d => new OverlaySpec(d.Target, Path.Combine(dir, $"{d.Target}.overlay.qcow2")))]);
        try
        {
            foreach (var disk in before.Disks)
            {
                var copy = Path.Combine(dir, $"{disk.Target}.copy.{disk.Format}");
                var progress = new Progress();
                var result = await Hypervisor.Images.CopyAsync(disk.SourcePath, disk.Format, copy, new CopyOptions { ComputeDataSha256 = true }, progress);

                var source = await Hypervisor.Images.InfoAsync(disk.SourcePath, disk.Format);
                var copied = await Hypervisor.Images.InfoAsync(copy, disk.Format);
                Assert.Equal(disk.Format, copied.Format);
                Assert.Equal(source.VirtualSize, copied.VirtualSize);
                Assert.Null(copied.BackingFile);
                if (disk.Format == "raw")
                {
                    // A raw image is as long as its disk; the copy keeps its holes.
                    Assert.Equal(source.VirtualSize, result.BytesCopied);
                    Assert.True(copied.ActualSize < copied.VirtualSize, $"raw copy allocates {copied.ActualSize} of {copied.VirtualSize} bytes");
                }

                Assert.True(copied.ActualSize <= source.ActualSize + MiB, $"copy allocates {copied.ActualSize}, source {source.ActualSize}");
                var sourceDigests = await Hypervisor.Images.ComputeDigestsAsync(disk.SourcePath);
                var copyDigests = await Hypervisor.Images.ComputeDigestsAsync(copy);
                Assert.Equal(sourceDigests, copyDigests);
                Assert.Equal(copyDigests.Sha256, result.Sha256);
                Assert.Equal(copyDigests.DataSha256, result.DataSha256);
                Assert.Equal(copyDigests.Sha256, await Hypervisor.Images.ComputeSha256Async(copy));
                Assert.Matches("^[0-9a-f]{64}$", result.Sha256!);
                Assert.True((await Hypervisor.Images.CheckAsync(copy, disk.Format)).Clean);
                Assert.NotEmpty(progress.Reports);
                Assert.Equal(result.BytesCopied, progress.Reports.Max(p => p.BytesDone));

                var again = await Assert.ThrowsAsync<HypervisorException>(() => Hypervisor.Images.CopyAsync(disk.SourcePath, disk.Format, copy, new CopyOptions()));
                Assert.Equal(HypervisorErrorKind.FileExists, again.Kind);
                Assert.Equal(copyDigests.Sha256, await Hypervisor.Images.ComputeSha256Async(copy));
                await Hypervisor.Images.DeleteAsync(copy);
            }
        }
        finally
        {
            await CommitBackAsync(RunningVm, before);
        }

        foreach (var disk in before.Disks)
        {
            await Hypervisor.Images.DeleteAsync(Path.Combine(dir, $"{disk.Target}.overlay.qcow2"));
        }
    }

    [Fact]
    public async Task DiskImages_CreateChainFlattenCommit_NameEveryFormat()
    {
        var dir = NewScratchDir();
        var baseImage = Path.Combine(dir, "base.raw");
        var overlay = Path.Combine(dir, "overlay.qcow2");
        var flat = Path.Combine(dir, "flat.qcow2");

        await Hypervisor.Images.CreateAsync(baseImage, "raw", 64 * MiB);
        await AssertKindAsync(HypervisorErrorKind.FileExists, () => Hypervisor.Images.CreateAsync(baseImage, "raw", 64 * MiB));
        await AssertKindAsync(HypervisorErrorKind.InvalidArgument, () => Hypervisor.Images.CreateAsync(overlay, "qcow2", 0, baseImage, backingFormat: null));
        await Hypervisor.Images.CreateAsync(overlay, "qcow2", 0, baseImage, "raw");

        var info = await Hypervisor.Images.InfoAsync(overlay, "qcow2");
        Assert.Equal("qcow2", info.Format);
        Assert.Equal(64 * MiB, info.VirtualSize);
        Assert.Equal(baseImage, info.BackingFile);
        Assert.Equal("raw", info.BackingFormat);
        Assert.Empty(await Hypervisor.Images.ListSnapshotsAsync(baseImage, "raw"));
        Assert.Empty(await Hypervisor.Images.ListSnapshotsAsync(overlay, "qcow2"));

        // A chain copies as one standalone qcow2 image.
        var result = await Hypervisor.Images.CopyAsync(overlay, "qcow2", flat, new CopyOptions { SourceBackingChain = [new DiskLayer(baseImage, "raw")] });
        var flatInfo = await Hypervisor.Images.InfoAsync(flat, "qcow2");
        Assert.Equal("qcow2", flatInfo.Format);
        Assert.Null(flatInfo.BackingFile);
        Assert.Equal(64 * MiB, flatInfo.VirtualSize);
        Assert.Equal(await Hypervisor.Images.ComputeSha256Async(flat), result.Sha256);
        Assert.True((await Hypervisor.Images.CheckAsync(flat, "qcow2")).Clean);

        // Offline commit into exactly the image below; it needs that image named.
        await AssertKindAsync(HypervisorErrorKind.InvalidArgument, () => Hypervisor.Images.CommitAsync(overlay, []));
        await Hypervisor.Images.CommitAsync(overlay, [new DiskLayer(baseImage, "raw")]);
        Assert.True((await Hypervisor.Images.CheckAsync(overlay, "qcow2")).Clean);

        foreach (var path in new[] { flat, overlay, baseImage })
        {
            await Hypervisor.Images.DeleteAsync(path);
            Assert.False(await Hypervisor.Images.ExistsAsync(path));
        }

        Assert.True(await Hypervisor.Images.FreeSpaceAsync(dir) > 0);
    }

    [Fact]
    public async Task DiskImages_MissingFiles_ThrowFileNotFound()
    {
        var missing = Path.Combine(NewScratchDir(), "missing.qcow2");

        Assert.False(await Hypervisor.Images.ExistsAsync(missing));
        await AssertKindAsync(HypervisorErrorKind.FileNotFound, () => Hypervisor.Images.InfoAsync(missing, "qcow2"));
        await AssertKindAsync(HypervisorErrorKind.FileNotFound, () => Hypervisor.Images.CheckAsync(missing, "qcow2"));
        await AssertKindAsync(HypervisorErrorKind.FileNotFound, () => Hypervisor.Images.ComputeSha256Async(missing));
        await AssertKindAsync(HypervisorErrorKind.FileNotFound, () => Hypervisor.Images.ComputeDigestsAsync(missing));
        await AssertKindAsync(HypervisorErrorKind.FileNotFound, () => Hypervisor.Images.CopyAsync(missing, "qcow2", missing + ".copy", new CopyOptions()));
        Assert.False(await Hypervisor.Images.ExistsAsync(missing + ".copy"));
        await Hypervisor.Images.DeleteAsync(missing);
    }

    // ---- helpers ----

    /// <summary>Commits every disk of <paramref name="domain"/> back, one layer at a time, to the chain it had in <paramref name="original"/>.</summary>
    // ---- backup jobs and checkpoints (incremental backups) ----

    [Fact]
    public async Task BackupJob_FullWithCheckpointThenIncremental_CopiesOnlyTheChangesAndChainsTheCheckpoints()
    {
        var dir = NewScratchDir();
        var vdb = (await Hypervisor.GetDomainAsync(RunningVm)).Disks.Single(d => d.Target == "vdb");
        var fullVda = Path.Combine(dir, "full-vda.raw");
        var fullVdb = Path.Combine(dir, "full-vdb.qcow2");
        var incVdb = Path.Combine(dir, "inc-vdb.qcow2");
        try
        {
            await Hypervisor.StartBackupJobAsync(RunningVm, new BackupJobSpec(
                [new BackupJobDisk("vda", fullVda, "raw"), new BackupJobDisk("vdb", fullVdb, "qcow2")],
                NewCheckpoint: "contract-c1",
                CheckpointDisks: ["vdb"]));
            var full = await WaitForBackupJobAsync(RunningVm);
            Assert.True(full.State == BackupJobState.Completed, $"{full.State}: {full.Error}");
            Assert.Equal(BackupJobState.None, (await Hypervisor.GetBackupJobAsync(RunningVm)).State); // the end is read once

            var fullInfo = await Hypervisor.Images.InfoAsync(fullVdb, "qcow2");
            Assert.Equal(64 * MiB, fullInfo.VirtualSize);
            Assert.Null(fullInfo.BackingFile);
            Assert.Equal(64 * MiB, (await Hypervisor.Images.InfoAsync(fullVda, "raw")).VirtualSize);
            var c1 = Assert.Single(await Hypervisor.ListCheckpointsAsync(RunningVm));
            Assert.Equal("contract-c1", c1.Name);
            Assert.Null(c1.Parent);
            Assert.Equal(["vda:-", "vdb:contract-c1"], c1.Disks.Select(d => $"{d.Target}:{d.Bitmap ?? "-"}").Order().ToList());

            await LetTheGuestWriteAsync(RunningVm);
            await Hypervisor.StartBackupJobAsync(RunningVm, new BackupJobSpec(
                [new BackupJobDisk("vdb", incVdb, "qcow2")],
                Incremental: "contract-c1",
                NewCheckpoint: "contract-c2",
                CheckpointDisks: ["vdb"]));
            var incremental = await WaitForBackupJobAsync(RunningVm);
            Assert.True(incremental.State == BackupJobState.Completed, $"{incremental.State}: {incremental.Error}");
            Assert.InRange(incremental.BytesTotal, 1, full.BytesTotal - 1);

            // libvirt names the live disk as the incremental target's backing file: detached, then put on its parent.
            var incInfo = await Hypervisor.Images.InfoAsync(incVdb, "qcow2");
            Assert.Equal(vdb.SourcePath, incInfo.BackingFile);
            await Hypervisor.Images.SetBackingAsync(incVdb, null, null);
            Assert.Null((await Hypervisor.Images.InfoAsync(incVdb, "qcow2")).BackingFile);
            await Hypervisor.Images.SetBackingAsync(incVdb, "full-vdb.qcow2", "qcow2");
            var rebased = await Hypervisor.Images.InfoAsync(incVdb, "qcow2");
            Assert.Equal(fullVdb, rebased.BackingFile);
            Assert.Equal("qcow2", rebased.BackingFormat);

            var checkpoints = await Hypervisor.ListCheckpointsAsync(RunningVm);
            Assert.Equal(["contract-c1", "contract-c2"], checkpoints.Select(c => c.Name).ToList());
            Assert.Equal("contract-c1", checkpoints[1].Parent);
        }
        finally
        {
            await DeleteCheckpointsAsync(RunningVm);
        }

        Assert.Empty(await Hypervisor.ListCheckpointsAsync(RunningVm));
    }

    [Fact]
    public async Task BackupJob_BadRequests_RefusedWithTheirKindsAndNothingCreated()
    {
        var dir = NewScratchDir();
        var target = Path.Combine(dir, "vdb.qcow2");
        await Hypervisor.Images.CreateAsync(Path.Combine(dir, "taken.qcow2"), "qcow2", MiB);
        var cases = new (string Case, HypervisorErrorKind Kind, Func<Task> Act)[]
        {
            ("unknown checkpoint", HypervisorErrorKind.CheckpointNotFound, () => Hypervisor.StartBackupJobAsync(RunningVm, new BackupJobSpec([new BackupJobDisk("vdb", target, "qcow2")], Incremental: "contract-none"))),
            ("bitmap on raw", HypervisorErrorKind.UnsupportedDiskFormat, () => Hypervisor.StartBackupJobAsync(RunningVm, new BackupJobSpec([new BackupJobDisk("vdb", target, "qcow2")], NewCheckpoint: "contract-raw", CheckpointDisks: ["vda"]))),
            ("target exists", HypervisorErrorKind.FileExists, () => Hypervisor.StartBackupJobAsync(RunningVm, new BackupJobSpec([new BackupJobDisk("vdb", Path.Combine(dir, "taken.qcow2"), "qcow2")]))),
            ("unknown disk", HypervisorErrorKind.DiskNotFound, () => Hypervisor.StartBackupJobAsync(RunningVm, new BackupJobSpec([new BackupJobDisk("vdz", target, "qcow2")]))),
            ("relative target", HypervisorErrorKind.InvalidArgument, () => Hypervisor.StartBackupJobAsync(RunningVm, new BackupJobSpec([new BackupJobDisk("vdb", "vdb.qcow2", "qcow2")]))),
            ("probed format", HypervisorErrorKind.InvalidArgument, () => Hypervisor.StartBackupJobAsync(RunningVm, new BackupJobSpec([new BackupJobDisk("vdb", target, "auto")]))),
            ("disk twice", HypervisorErrorKind.InvalidArgument, () => Hypervisor.StartBackupJobAsync(RunningVm, new BackupJobSpec([new BackupJobDisk("vdb", target, "qcow2"), new BackupJobDisk("vdb", target + "2", "qcow2")]))),
            ("no disk", HypervisorErrorKind.InvalidArgument, () => Hypervisor.StartBackupJobAsync(RunningVm, new BackupJobSpec([]))),
            ("bad checkpoint name", HypervisorErrorKind.InvalidArgument, () => Hypervisor.StartBackupJobAsync(RunningVm, new BackupJobSpec([new BackupJobDisk("vdb", target, "qcow2")], NewCheckpoint: "../c", CheckpointDisks: ["vdb"]))),
            ("shut-off domain", HypervisorErrorKind.InvalidDomainState, () => Hypervisor.StartBackupJobAsync(ShutOffVm, new BackupJobSpec([new BackupJobDisk("vda", target, "qcow2")]))),
            ("unknown domain", HypervisorErrorKind.DomainNotFound, () => Hypervisor.StartBackupJobAsync("contract-no-such-domain", new BackupJobSpec([new BackupJobDisk("vda", target, "qcow2")]))),
            ("abort without job", HypervisorErrorKind.NoBlockJob, () => Hypervisor.AbortBackupJobAsync(RunningVm)),
            ("delete unknown checkpoint", HypervisorErrorKind.CheckpointNotFound, () => Hypervisor.DeleteCheckpointAsync(RunningVm, "contract-none")),
        };

        foreach (var (name, kind, act) in cases)
        {
            var error = await Assert.ThrowsAsync<HypervisorException>(act);
            Assert.True(error.Kind == kind, $"{name}: {error.Kind}: {error.Message}");
        }

        Assert.False(await Hypervisor.Images.ExistsAsync(target));
        Assert.Empty(await Hypervisor.ListCheckpointsAsync(RunningVm));
        Assert.Equal(BackupJobState.None, (await Hypervisor.GetBackupJobAsync(RunningVm)).State);
        await Hypervisor.Images.DeleteAsync(Path.Combine(dir, "taken.qcow2"));
    }

    [Fact]
    public async Task Checkpoint_MetadataDeletedThenRedefinedFromItsXml_IncrementalSinceItStillWorks()
    {
        var dir = NewScratchDir();
        try
        {
            await Hypervisor.StartBackupJobAsync(RunningVm, new BackupJobSpec(
                [new BackupJobDisk("vdb", Path.Combine(dir, "full.qcow2"), "qcow2")], NewCheckpoint: "contract-r1", CheckpointDisks: ["vdb"]));
            Assert.Equal(BackupJobState.Completed, (await WaitForBackupJobAsync(RunningVm)).State);
            var saved = Assert.Single(await Hypervisor.ListCheckpointsAsync(RunningVm));

            await Hypervisor.DeleteCheckpointAsync(RunningVm, "contract-r1", metadataOnly: true); // libvirt forgot it; the bitmap stays
            Assert.Empty(await Hypervisor.ListCheckpointsAsync(RunningVm));
            await Hypervisor.RedefineCheckpointAsync(RunningVm, saved.Xml);
            var redefined = Assert.Single(await Hypervisor.ListCheckpointsAsync(RunningVm));
            Assert.Equal("contract-r1", redefined.Name);
            Assert.Equal("vdb:contract-r1", string.Join(",", redefined.Disks.Where(d => d.Bitmap is not null).Select(d => $"{d.Target}:{d.Bitmap}")));
            await AssertKindAsync(HypervisorErrorKind.CheckpointExists, () => Hypervisor.RedefineCheckpointAsync(RunningVm, saved.Xml));

            await LetTheGuestWriteAsync(RunningVm);
            await Hypervisor.StartBackupJobAsync(RunningVm, new BackupJobSpec([new BackupJobDisk("vdb", Path.Combine(dir, "inc.qcow2"), "qcow2")], Incremental: "contract-r1"));
            var incremental = await WaitForBackupJobAsync(RunningVm);
            Assert.True(incremental.State == BackupJobState.Completed, $"{incremental.State}: {incremental.Error}");
            Assert.True(incremental.BytesTotal > 0);
        }
        finally
        {
            await DeleteCheckpointsAsync(RunningVm);
        }
    }

    /// <summary>Gives the running guest time to write (the lab guest writes its counter to every disk all the time).</summary>
    protected virtual Task LetTheGuestWriteAsync(string domain) => Task.Delay(TimeSpan.FromSeconds(2));

    protected async Task<BackupJobStatus> WaitForBackupJobAsync(string domain)
    {
        var deadline = DateTime.UtcNow + EventTimeout;
        while (true)
        {
            var status = await Hypervisor.GetBackupJobAsync(domain);
            if (status.Ended)
            {
                return status;
            }

            Assert.True(DateTime.UtcNow < deadline, $"backup job of {domain} still {status.State} after {EventTimeout}");
            await Task.Delay(50);
        }
    }

    protected async Task DeleteCheckpointsAsync(string domain)
    {
        foreach (var checkpoint in (await Hypervisor.ListCheckpointsAsync(domain)).Reverse())
        {
            await Hypervisor.DeleteCheckpointAsync(domain, checkpoint.Name);
        }
    }

    protected async Task CommitBackAsync(string domain, DomainInfo original)
    {
        foreach (var was in original.Disks)
        {
            for (var round = 0; round < 4; round++)
            {
                var disk = (await Hypervisor.GetDomainAsync(domain)).Disks.Single(d => d.Target == was.Target);
                if (disk.ChainDepth <= was.ChainDepth)
                {
                    break;
                }

                if (await Hypervisor.GetBlockJobAsync(domain, was.Target) is null)
                {
                    await Hypervisor.StartActiveCommitAsync(domain, was.Target, disk.BackingChain[0].Path);
                }

                await Hypervisor.WaitForBlockJobReadyAsync(domain, was.Target).WaitAsync(EventTimeout);
                await Hypervisor.PivotAsync(domain, was.Target).WaitAsync(EventTimeout);
            }
        }
    }

    protected async Task StopAsync(string domain)
    {
        if ((await Hypervisor.GetDomainAsync(domain)).IsActive)
        {
            await Hypervisor.DestroyDomainAsync(domain);
        }
    }

    protected static async Task AssertKindAsync(HypervisorErrorKind kind, Func<Task> act)
    {
        var error = await Assert.ThrowsAsync<HypervisorException>(act);
        Assert.True(error.Kind == kind, $"expected {kind}, got {error.Kind}: {error.Message}");
    }

    /// <summary>Disks as comparable text: target, source, format and the chain with formats.</summary>
    protected static string Describe(DomainInfo domain) => string.Join(" | ", domain.Disks.Select(Describe));

    protected static string Describe(DomainDisk disk) =>
        $"{disk.Target}={disk.SourcePath}:{disk.Format}{string.Concat(disk.BackingChain.Select(l => $" <- {l.Path}:{l.Format}"))}";

    private sealed class Progress : IProgress<CopyProgress>
    {
        public ConcurrentQueue<CopyProgress> Reports { get; } = new();

        public void Report(CopyProgress value) => Reports.Enqueue(value);
    }

    /// <summary>The driver's events from construction to disposal.</summary>
    protected sealed class Recorder : IDisposable
    {
        private readonly IHypervisor _hypervisor;
        private readonly Lock _gate = new();
        private readonly List<DomainEvent> _events = [];
        private readonly List<(Func<IReadOnlyList<DomainEvent>, bool> Done, TaskCompletionSource Signal)> _waiters = [];

        public Recorder(IHypervisor hypervisor)
        {
            _hypervisor = hypervisor;
            _hypervisor.DomainEvent += OnEvent;
        }

        public IReadOnlyList<DomainEvent> For(string domain)
        {
            lock (_gate)
            {
                return [.. _events.Where(e => e.Domain == domain)];
            }
        }

        public IReadOnlyList<LifecycleEventType> Lifecycle(string domain) =>
            [.. For(domain).Where(e => e.Kind == DomainEventKind.Lifecycle && e.Lifecycle is not null).Select(e => e.Lifecycle!.Value)];

        /// <summary>Completes when <paramref name="type"/> was seen for the domain (after an <paramref name="after"/> event, when given).</summary>
        public Task WaitForAsync(string domain, LifecycleEventType type, TimeSpan timeout, LifecycleEventType? after = null)
        {
            bool Done(IReadOnlyList<DomainEvent> events)
            {
                var seen = events.Where(e => e.Domain == domain && e.Kind == DomainEventKind.Lifecycle).Select(e => e.Lifecycle).ToList();
                var from = after is { } a ? seen.IndexOf(a) : 0;
                return from >= 0 && seen.Skip(from).Contains(type);
            }

            lock (_gate)
            {
                if (Done(_events))
                {
                    return Task.CompletedTask;
                }

                var signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                _waiters.Add((Done, signal));
                return signal.Task.WaitAsync(timeout);
            }
        }

        public void Dispose() => _hypervisor.DomainEvent -= OnEvent;

        private void OnEvent(object? sender, DomainEvent e)
        {
            lock (_gate)
            {
                _events.Add(e);
                foreach (var waiter in _waiters.Where(w => w.Done(_events)).ToList())
                {
                    waiter.Signal.TrySetResult();
                    _waiters.Remove(waiter);
                }
            }
        }
    }
}
