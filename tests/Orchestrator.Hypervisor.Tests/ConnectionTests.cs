using System.Diagnostics;
using Orchestrator.Hypervisor.Libvirt;
using Orchestrator.Hypervisor.Tests.Lab;
using Xunit.Abstractions;

namespace Orchestrator.Hypervisor.Tests;

[Collection(LabCollection.Name)]
public sealed class ConnectionTests(LabFixture lab, ITestOutputHelper output)
{
    [Fact]
    public async Task LibvirtdRestart_OpenConnection_FailsFastThenReconnectsAndSeesTheGuestStillRunning()
    {
        await using var hv = await LibvirtHypervisor.ConnectAsync(lab.Uri);
        var before = await hv.GetDomainAsync(LabFixture.BackupVm);

        await lab.RestartLibvirtdAsync();
        var sw = Stopwatch.StartNew();
        DomainInfo after;
        while (true)
        {
            try
            {
                after = await hv.GetDomainAsync(LabFixture.BackupVm);
                break;
            }
            catch (HypervisorException e)
            {
                // Until the reconnect: a fast, clear failure (never a hang).
                Assert.Equal(HypervisorErrorKind.ConnectionFailed, e.Kind);
                Assert.NotNull(hv.Unreachable);
                Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), $"not reconnected after {sw.Elapsed.TotalSeconds:F0} s: {e.Message}");
                await Task.Delay(100);
            }
        }

        output.WriteLine($"the same driver answered again {sw.Elapsed.TotalMilliseconds:F0} ms after the restart finished");
        Assert.Null(hv.Unreachable);
        Assert.Equal(DomainPowerState.Running, after.State);
        Assert.Equal(before.Uuid, after.Uuid);
    }

    [Fact]
    public async Task ConnectAsync_LabHostTwice_BothConnectionsGetEvents()
    {
        await using var second = await LibvirtHypervisor.ConnectAsync(lab.Uri);
        using var first = new EventRecorder(lab.Hypervisor);
        using var other = new EventRecorder(second);

        await lab.Hypervisor.StartDomainAsync(LabFixture.OfflineVm, paused: true);
        try
        {
            await first.WaitForAsync(e => e.Domain == LabFixture.OfflineVm && e.Lifecycle == LifecycleEventType.Started, TimeSpan.FromSeconds(30));
            await other.WaitForAsync(e => e.Domain == LabFixture.OfflineVm && e.Lifecycle == LifecycleEventType.Started, TimeSpan.FromSeconds(30));
            Assert.Equal(DomainPowerState.Paused, (await second.GetDomainAsync(LabFixture.OfflineVm)).State);
        }
        finally
        {
            await lab.Hypervisor.DestroyDomainAsync(LabFixture.OfflineVm);
        }

        await other.WaitForAsync(e => e.Domain == LabFixture.OfflineVm && e.Lifecycle == LifecycleEventType.Stopped, TimeSpan.FromSeconds(30));
    }
}
