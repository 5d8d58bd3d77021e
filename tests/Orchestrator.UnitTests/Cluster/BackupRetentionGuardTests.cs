using Orchestrator.Hypervisor;

namespace Orchestrator.UnitTests.Cluster;

/// <summary>The VM grain refuses a retention that would prune everything, whoever calls it (not only the gRPC service).</summary>
[Collection(ThreeHostClusterCollection.Name)]
public sealed class BackupRetentionGuardTests(ThreeHostClusterFixture fixture)
{
    [Theory]
    [InlineData(0, 0, 0, 0, "retention")]
    [InlineData(-1, 1, 0, 0, "retention.keep_last")]
    [InlineData(1, 0, 0, 10_001, "retention.keep_monthly")]
    public async Task StartBackup_RetentionKeepingNothingOrOutOfRange_InvalidArgumentAndNothingPruned(int last, int daily, int weekly, int monthly, string field)
    {
        var hypervisor = fixture.Hypervisors["kvm-02"];
        var name = $"ret-{Guid.NewGuid():N}"[..12];
        hypervisor.AddDomain(name, DomainPowerState.Running, [("vda", "qcow2", 1L << 30)]);
        await fixture.Grains.GetGrain<IHostGrain>("kvm-02").SyncInventoryAsync();
        var vm = fixture.Grains.GetGrain<IVirtualMachineGrain>($"kvm-02/{name}");
        var first = await vm.StartBackupAsync(new BackupRequest());
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(120);
        while (!first.IsTerminal && DateTime.UtcNow < deadline)
        {
            first = await vm.WaitBackupAsync(first.RunKey.Split('/')[^1], first.Version, TimeSpan.FromSeconds(5));
        }

        Assert.True(first.Step == BackupStep.Completed, $"the first backup ended {first.Step}: {first.Error}");

        var e = await Assert.ThrowsAsync<OrchestratorException>(() => vm.StartBackupAsync(new BackupRequest { Retention = new BackupRetention(last, daily, weekly, monthly) }));

        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
        Assert.Equal(field, e.Field);
        var runs = await vm.ListBackupsAsync();
        var kept = Assert.Single(runs);
        Assert.Equal(BackupStep.Completed, kept.Step);
        Assert.True(Directory.Exists(kept.BackupSetPath));
    }
}
