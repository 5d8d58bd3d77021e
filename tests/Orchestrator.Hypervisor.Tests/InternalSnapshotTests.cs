using System.Diagnostics;
using Orchestrator.Hypervisor.Tests.Lab;
using Xunit.Abstractions;

namespace Orchestrator.Hypervisor.Tests;

/// <summary>Internal (qcow2) checkpoints on real QEMU guests, running and shut off.</summary>
[Collection(LabCollection.Name)]
public sealed class InternalSnapshotTests(LabFixture lab, ITestOutputHelper output)
{
    private static readonly TimeSpan EventTimeout = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task InternalSnapshot_RunningQcowGuest_CreateListRevertDelete()
    {
        const string vm = LabFixture.CheckpointVm;
        var hv = lab.Hypervisor;
        using var events = new EventRecorder(hv);
        await lab.WaitForGuestAsync(vm, 2);

        var sw = Stopwatch.StartNew();
        var created = await hv.CreateInternalSnapshotAsync(vm, "cp-running", "before the change");
        var createMs = sw.Elapsed.TotalMilliseconds;

        Assert.Equal("cp-running", created.Name);
        Assert.True(created.HasMemory);
        Assert.Equal(DomainPowerState.Running, created.StateAtSnapshot);
        Assert.Equal("before the change", created.Description);
        Assert.Equal(DomainPowerState.Running, (await hv.GetDomainAsync(vm)).State);
        var listed = Assert.Single(await hv.ListInternalSnapshotsAsync(vm));
        Assert.Equal(created, listed);

        // The memory state lives inside the qcow2 itself.
        var disk = Assert.Single((await hv.GetDomainAsync(vm)).Disks);
        var inImage = Assert.Single(await hv.Images.ListSnapshotsAsync(disk.SourcePath, disk.Format));
        Assert.Equal("cp-running", inImage.Name);
        Assert.True(inImage.HasMemory);

        sw.Restart();
        await hv.RevertInternalSnapshotAsync(vm, "cp-running", RevertTarget.Paused);
        var revertPausedMs = sw.Elapsed.TotalMilliseconds;
        Assert.Equal(DomainPowerState.Paused, (await hv.GetDomainAsync(vm)).State);

        sw.Restart();
        await hv.RevertInternalSnapshotAsync(vm, "cp-running", RevertTarget.Running);
        var revertRunningMs = sw.Elapsed.TotalMilliseconds;
        Assert.Equal(DomainPowerState.Running, (await hv.GetDomainAsync(vm)).State);

        // The guest carries on from the restored memory: it keeps writing records.
        var seq = await lab.WaitForGuestAsync(vm, 0);
        await lab.WaitForGuestAsync(vm, seq + 2);

        await hv.DeleteInternalSnapshotAsync(vm, "cp-running");
        Assert.Empty(await hv.ListInternalSnapshotsAsync(vm));
        Assert.Empty(await hv.Images.ListSnapshotsAsync(disk.SourcePath, disk.Format));

        // Saving memory pauses the guest: libvirt reports it as Suspended then Resumed.
        await events.WaitForAsync(e => e.Domain == vm && e.Lifecycle == LifecycleEventType.Resumed, EventTimeout);
        var lifecycle = events.For(vm).Where(e => e.Kind == DomainEventKind.Lifecycle).Select(e => $"{e.Lifecycle}/{e.Detail}").ToList();
        output.WriteLine($"create {createMs:F0} ms, revert paused {revertPausedMs:F0} ms, revert running {revertRunningMs:F0} ms; lifecycle: {string.Join(", ", lifecycle)}");
        Assert.Contains(events.For(vm), e => e.Lifecycle == LifecycleEventType.Suspended);
    }

    [Fact]
    public async Task InternalSnapshot_ShutOffQcowGuest_DiskOnlyCreateListRevertDelete()
    {
        const string vm = LabFixture.OfflineVm;
        var hv = lab.Hypervisor;
        Assert.Equal(DomainPowerState.ShutOff, (await hv.GetDomainAsync(vm)).State);

        var first = await hv.CreateInternalSnapshotAsync(vm, "off-1");
        var second = await hv.CreateInternalSnapshotAsync(vm, "off-2", "second");

        Assert.False(first.HasMemory);
        Assert.Equal(DomainPowerState.ShutOff, first.StateAtSnapshot);
        Assert.Equal(["off-1", "off-2"], (await hv.ListInternalSnapshotsAsync(vm)).Select(s => s.Name).ToList());

        var duplicate = await Assert.ThrowsAsync<HypervisorException>(() => hv.CreateInternalSnapshotAsync(vm, "off-1"));
        Assert.Equal(HypervisorErrorKind.SnapshotExists, duplicate.Kind);

        await hv.RevertInternalSnapshotAsync(vm, "off-1");
        Assert.Equal(DomainPowerState.ShutOff, (await hv.GetDomainAsync(vm)).State);

        await hv.DeleteInternalSnapshotAsync(vm, second.Name);
        await hv.DeleteInternalSnapshotAsync(vm, first.Name);
        Assert.Empty(await hv.ListInternalSnapshotsAsync(vm));

        var missing = await Assert.ThrowsAsync<HypervisorException>(() => hv.DeleteInternalSnapshotAsync(vm, "off-1"));
        Assert.Equal(HypervisorErrorKind.SnapshotNotFound, missing.Kind);
        Assert.Equal(72, missing.LibvirtCode);
    }

    [Fact]
    public async Task ListDomainsAsync_LabHost_ListsGuestsWithStatesAndDisks()
    {
        var domains = await lab.Hypervisor.ListDomainsAsync();

        var backup = Assert.Single(domains, d => d.Name == LabFixture.BackupVm);
        var offline = Assert.Single(domains, d => d.Name == LabFixture.OfflineVm);
        Assert.Equal(DomainPowerState.Running, backup.State);
        Assert.Equal(DomainPowerState.ShutOff, offline.State);
        Assert.Equal(128 * 1024, backup.MemoryKiB);
        Assert.Equal(1, backup.VirtualCpus);
        Assert.Equal(2, backup.Disks.Count);

        var facts = await lab.Hypervisor.GetFactsAsync();
        Assert.Equal("QEMU", facts.DriverName);
        output.WriteLine($"{facts.HostName}: libvirt {facts.LibvirtVersion}, QEMU {facts.HypervisorVersion}");
    }
}
