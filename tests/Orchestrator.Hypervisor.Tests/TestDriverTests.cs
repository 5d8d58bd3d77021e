using Orchestrator.Hypervisor.Libvirt;

namespace Orchestrator.Hypervisor.Tests;

/// <summary>
/// The driver against libvirt's test driver (test:///default: an in-memory host with one running domain "test").
/// Each connection gets its own fresh copy of that host. It has internal snapshots and lifecycle events, but no
/// external snapshots or block jobs: those are covered by the lab tests against real QEMU.
/// </summary>
public sealed class TestDriverTests : IAsyncLifetime
{
    private LibvirtHypervisor _hv = null!;

    public async Task InitializeAsync() => _hv = await LibvirtHypervisor.ConnectAsync("test:///default");

    public async Task DisposeAsync() => await _hv.DisposeAsync();

    [Fact]
    public async Task GetFactsAsync_TestDriver_ReportsHostAndVersions()
    {
        var facts = await _hv.GetFactsAsync();

        Assert.Equal("test:///default", facts.Uri);
        Assert.Equal("TEST", facts.DriverName);
        Assert.False(string.IsNullOrEmpty(facts.HostName));
        Assert.StartsWith("9.", facts.LibvirtVersion, StringComparison.Ordinal);
        Assert.Matches(@"^\d+\.\d+\.\d+$", facts.HypervisorVersion);
    }

    [Fact]
    public async Task GetCapacityAsync_TestDriver_ReadsNodeInfoAndFreeMemory()
    {
        var capacity = await _hv.GetCapacityAsync();

        // What `virsh -c test:///default nodeinfo` / `freecell` say: 16 CPUs, 3145728 KiB, 3072 KiB free.
        Assert.Equal(new NodeCapacity(3145728, 3072, 16), capacity);
    }

    [Fact]
    public async Task ListDomainsAsync_TestDriver_ListsTheRunningTestDomain()
    {
        var domains = await _hv.ListDomainsAsync();

        var test = Assert.Single(domains, d => d.Name == "test");
        Assert.Equal(DomainPowerState.Running, test.State);
        Assert.NotEqual(Guid.Empty, test.Uuid);
        Assert.True(test.MemoryKiB > 0);
        Assert.True(test.VirtualCpus > 0);
    }

    [Fact]
    public async Task GetDomainAsync_UnknownDomain_ThrowsDomainNotFoundWithLibvirtCode()
    {
        var ex = await Assert.ThrowsAsync<HypervisorException>(() => _hv.GetDomainAsync("no-such-domain"));

        Assert.Equal(HypervisorErrorKind.DomainNotFound, ex.Kind);
        Assert.Equal(42, ex.LibvirtCode);
        Assert.Contains("no-such-domain", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DefineDomainAsync_WithLabels_ReadsLabelsBackAndUndefines()
    {
        var labels = DomainXml.FormatLabels(new Dictionary<string, string> { ["tier"] = "web", ["backup"] = "nightly" });
        var xml = $"""
            <domain type='test'>
              <name>labelled</name>
              <memory unit='MiB'>64</memory>
              <vcpu>2</vcpu>
              <metadata>{labels}</metadata>
              <os><type>hvm</type></os>
              <devices>
                <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/tmp/labelled.qcow2'/><target dev='vda' bus='virtio'/></disk>
              </devices>
            </domain>
            """;

        var name = await _hv.DefineDomainAsync(xml);
        var info = await _hv.GetDomainAsync(name);

        Assert.Equal("labelled", name);
        Assert.Equal(DomainPowerState.ShutOff, info.State);
        Assert.Equal("web", info.Labels["tier"]);
        Assert.Equal("nightly", info.Labels["backup"]);
        Assert.Equal(64 * 1024, info.MemoryKiB);
        Assert.Equal(2, info.VirtualCpus);
        var disk = Assert.Single(info.Disks);
        Assert.Equal(("vda", "/tmp/labelled.qcow2", "qcow2"), (disk.Target, disk.SourcePath, disk.Format));

        await _hv.UndefineDomainAsync(name);
        var gone = await Assert.ThrowsAsync<HypervisorException>(() => _hv.GetDomainAsync(name));
        Assert.Equal(HypervisorErrorKind.DomainNotFound, gone.Kind);
    }

    [Fact]
    public async Task SuspendResumeDestroyStart_TestDomain_DeliversLifecycleEventsInOrder()
    {
        using var events = new EventRecorder(_hv);

        await _hv.SuspendDomainAsync("test");
        Assert.Equal(DomainPowerState.Paused, (await _hv.GetDomainAsync("test")).State);
        await _hv.ResumeDomainAsync("test");
        await _hv.DestroyDomainAsync("test");
        Assert.Equal(DomainPowerState.ShutOff, (await _hv.GetDomainAsync("test")).State);
        await _hv.StartDomainAsync("test");

        await events.WaitForAsync(e => e.Lifecycle == LifecycleEventType.Started, TimeSpan.FromSeconds(10));
        var seen = events.For("test").Where(e => e.Kind == DomainEventKind.Lifecycle).Select(e => e.Lifecycle).ToList();
        Assert.Equal([LifecycleEventType.Suspended, LifecycleEventType.Resumed, LifecycleEventType.Stopped, LifecycleEventType.Started], seen);
    }

    [Fact]
    public async Task StartDomainAsync_AlreadyRunning_ThrowsInvalidDomainState()
    {
        var ex = await Assert.ThrowsAsync<HypervisorException>(() => _hv.StartDomainAsync("test"));

        Assert.Equal(HypervisorErrorKind.InvalidDomainState, ex.Kind);
        Assert.Contains("already active", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task InternalSnapshots_QcowDomain_CreateListRevertDelete()
    {
        await DefineQcowDomainAsync("snappy");
        await _hv.StartDomainAsync("snappy");

        var first = await _hv.CreateInternalSnapshotAsync("snappy", "cp-1", "first");
        await _hv.SuspendDomainAsync("snappy");
        var second = await _hv.CreateInternalSnapshotAsync("snappy", "cp-2");

        Assert.Equal("cp-1", first.Name);
        Assert.Equal("first", first.Description);
        Assert.Equal(DomainPowerState.Running, first.StateAtSnapshot);
        Assert.Equal(DomainPowerState.Paused, second.StateAtSnapshot);
        Assert.True(first.CreatedAt > DateTimeOffset.UtcNow.AddMinutes(-5));
        Assert.Equal(["cp-1", "cp-2"], (await _hv.ListInternalSnapshotsAsync("snappy")).Select(s => s.Name).Order().ToList());

        await _hv.RevertInternalSnapshotAsync("snappy", "cp-1");
        Assert.Equal(DomainPowerState.Running, (await _hv.GetDomainAsync("snappy")).State);
        await _hv.RevertInternalSnapshotAsync("snappy", "cp-1", RevertTarget.Paused);
        Assert.Equal(DomainPowerState.Paused, (await _hv.GetDomainAsync("snappy")).State);

        var exists = await Assert.ThrowsAsync<HypervisorException>(() => _hv.CreateInternalSnapshotAsync("snappy", "cp-1"));
        Assert.Equal(HypervisorErrorKind.SnapshotExists, exists.Kind);

        await _hv.DeleteInternalSnapshotAsync("snappy", "cp-2");
        await _hv.DeleteInternalSnapshotAsync("snappy", "cp-1");
        Assert.Empty(await _hv.ListInternalSnapshotsAsync("snappy"));
    }

    [Fact]
    public async Task CreateInternalSnapshotAsync_RawDisk_RefusedWithReason()
    {
        // The built-in "test" domain has a raw disk.
        var ex = await Assert.ThrowsAsync<HypervisorException>(() => _hv.CreateInternalSnapshotAsync("test", "nope"));

        Assert.Equal(HypervisorErrorKind.UnsupportedDiskFormat, ex.Kind);
        Assert.Contains("qcow2", ex.Message, StringComparison.Ordinal);
        Assert.Contains("live backup", ex.Message, StringComparison.Ordinal);
        Assert.Empty(await _hv.ListInternalSnapshotsAsync("test"));
    }

    [Fact]
    public async Task RevertInternalSnapshotAsync_UnknownSnapshot_ThrowsSnapshotNotFound()
    {
        var ex = await Assert.ThrowsAsync<HypervisorException>(() => _hv.RevertInternalSnapshotAsync("test", "never-taken"));

        Assert.Equal(HypervisorErrorKind.SnapshotNotFound, ex.Kind);
        Assert.Equal(72, ex.LibvirtCode);
    }

    [Fact]
    public async Task ConnectAsync_BadUri_ThrowsConnectionFailed()
    {
        var ex = await Assert.ThrowsAsync<HypervisorException>(() => LibvirtHypervisor.ConnectAsync("qemu+unix:///system?socket=/nonexistent/libvirt-sock"));

        Assert.Equal(HypervisorErrorKind.ConnectionFailed, ex.Kind);
        Assert.NotNull(ex.LibvirtCode);
    }

    [Fact]
    public async Task Calls_AfterDispose_ThrowObjectDisposed()
    {
        var hv = await LibvirtHypervisor.ConnectAsync("test:///default");
        await hv.DisposeAsync();

        await Assert.ThrowsAsync<ObjectDisposedException>(() => hv.ListDomainsAsync());
    }

    [Fact]
    public async Task ConcurrentCalls_OneConnection_AllSucceed()
    {
        var calls = Enumerable.Range(0, 32).Select(_ => _hv.GetDomainAsync("test"));

        var results = await Task.WhenAll(calls);

        Assert.All(results, r => Assert.Equal("test", r.Name));
    }

    private Task<string> DefineQcowDomainAsync(string name) =>
        _hv.DefineDomainAsync($"""
            <domain type='test'>
              <name>{name}</name>
              <memory unit='MiB'>64</memory>
              <os><type>hvm</type></os>
              <devices>
                <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/tmp/{name}.qcow2'/><target dev='vda' bus='virtio'/></disk>
              </devices>
            </domain>
            """);
}
