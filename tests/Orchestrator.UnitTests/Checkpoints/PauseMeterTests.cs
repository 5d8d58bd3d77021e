using Orchestrator.Grains.Checkpoints;
using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Simulated;

namespace Orchestrator.UnitTests.Checkpoints;

public sealed class PauseMeterTests
{
    private static readonly TimeSpan Grace = TimeSpan.FromSeconds(5);

    [Fact]
    public async Task MeasureAsync_SnapshotOfRunningDomain_PauseComesFromItsEvents()
    {
        var hv = new SimulatedHypervisor(new SimulatedOptions { InternalSnapshotPause = TimeSpan.FromMilliseconds(80) });
        hv.AddDomain("vm", DomainPowerState.Running, [("vda", "qcow2", 1L << 30)]);
        using var meter = new PauseMeter(hv, "vm");

        await hv.CreateInternalSnapshotAsync("vm", "a");
        var (pause, source) = await meter.MeasureAsync(TimeSpan.FromSeconds(9), Grace);

        Assert.Equal(PauseSource.Events, source);
        Assert.InRange(pause, TimeSpan.FromMilliseconds(70), TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task MeasureAsync_ResumedArrivesAfterTheCall_WaitsForIt()
    {
        var hv = new SimulatedHypervisor();
        hv.AddDomain("vm", DomainPowerState.Running, [("vda", "qcow2", 1L << 30)]);
        using var meter = new PauseMeter(hv, "vm");

        await hv.SuspendDomainAsync("vm");
        var measuring = meter.MeasureAsync(TimeSpan.FromSeconds(9), Grace);
        await Task.Delay(150);
        await hv.ResumeDomainAsync("vm");
        var (pause, source) = await measuring;

        Assert.Equal(PauseSource.Events, source);
        Assert.InRange(pause, TimeSpan.FromMilliseconds(140), TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task MeasureAsync_NoEvents_FallsBackToTheCallDuration()
    {
        var hv = new SimulatedHypervisor();
        hv.AddDomain("vm", DomainPowerState.ShutOff, [("vda", "qcow2", 1L << 30)]);
        using var meter = new PauseMeter(hv, "vm");

        await hv.CreateInternalSnapshotAsync("vm", "a");
        var (pause, source) = await meter.MeasureAsync(TimeSpan.FromMilliseconds(123), Grace);

        Assert.Equal(PauseSource.CallDuration, source);
        Assert.Equal(TimeSpan.FromMilliseconds(123), pause);
    }

    [Fact]
    public async Task MeasureAsync_OtherDomainsEvents_AreIgnored()
    {
        var hv = new SimulatedHypervisor(new SimulatedOptions { InternalSnapshotPause = TimeSpan.FromMilliseconds(20) });
        hv.AddDomain("vm", DomainPowerState.ShutOff, [("vda", "qcow2", 1L << 30)]);
        hv.AddDomain("other", DomainPowerState.Running, [("vda", "qcow2", 1L << 30)]);
        using var meter = new PauseMeter(hv, "vm");

        await hv.CreateInternalSnapshotAsync("other", "a");
        var (_, source) = await meter.MeasureAsync(TimeSpan.FromMilliseconds(5), TimeSpan.FromMilliseconds(200));

        Assert.False(meter.SawSuspend);
        Assert.Equal(PauseSource.CallDuration, source);
    }

    [Fact]
    public async Task MeasureAsync_SuspendedButNoResume_FallsBackAfterTheGrace()
    {
        var hv = new SimulatedHypervisor();
        hv.AddDomain("vm", DomainPowerState.Running, [("vda", "qcow2", 1L << 30)]);
        using var meter = new PauseMeter(hv, "vm");

        await hv.SuspendDomainAsync("vm");
        var (pause, source) = await meter.MeasureAsync(TimeSpan.FromMilliseconds(42), TimeSpan.FromMilliseconds(100));

        Assert.True(meter.SawSuspend);
        Assert.Equal(PauseSource.CallDuration, source);
        Assert.Equal(TimeSpan.FromMilliseconds(42), pause);
    }
}
