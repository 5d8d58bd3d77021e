using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Simulated;

namespace Orchestrator.UnitTests.Cluster;

/// <summary>An external process that runs past its bound fails its step cleanly: the VM ends on its own image, no overlay left.</summary>
[Collection(ThreeHostClusterCollection.Name)]
public sealed class BackupTimeoutTests(ThreeHostClusterFixture fixture)
{
    [Fact]
    public async Task StartBackup_CopyRunsPastItsBound_CommitsBackAndFailsNamingTheTimeout()
    {
        var hypervisor = fixture.Hypervisors["kvm-02"];
        hypervisor.AddDomain("bk-timeout", DomainPowerState.Running, [("vda", "qcow2", 64L << 20)]);
        hypervisor.LinkToTemplate("bk-timeout", "vda", "/var/lib/libvirt/images/templates/timeout.qcow2");
        await fixture.Grains.GetGrain<IHostGrain>("kvm-02").SyncInventoryAsync();
        var vm = fixture.Grains.GetGrain<IVirtualMachineGrain>("kvm-02/bk-timeout");
        var before = (await hypervisor.GetDomainAsync("bk-timeout")).Disks.Single();
        hypervisor.InjectFault(SimulatedOperation.Copy, new HypervisorException(HypervisorErrorKind.Timeout, "qemu-img convert ran longer than its bound of 86400 s and was killed"));

        var run = await vm.StartBackupAsync(new BackupRequest());
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!run.IsTerminal)
        {
            Assert.True(DateTime.UtcNow < deadline, $"run stuck at {run.Step}");
            run = await vm.WaitBackupAsync(run.RunKey.Split('/')[^1], run.Version, TimeSpan.FromSeconds(5));
        }

        Assert.Equal(BackupStep.Failed, run.Step);
        Assert.True(run.RollingBack);
        Assert.Contains("longer than its bound", run.Error, StringComparison.Ordinal);
        var after = (await hypervisor.GetDomainAsync("bk-timeout")).Disks.Single();
        Assert.Equal(before.SourcePath, after.SourcePath);
        Assert.Equal(before.BackingChain, after.BackingChain);
        Assert.False(await hypervisor.Images.ExistsAsync(run.Disks[0].OverlayPath));
    }
}
