using Microsoft.Extensions.DependencyInjection;
using Orchestrator.Grains.Backups;
using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Simulated;
using Orchestrator.UnitTests.Cluster;

namespace Orchestrator.UnitTests.State;

/// <summary>The three-host cluster with a short commit/clean-up retry budget and a fast reconcile.</summary>
public sealed class ShortBudgetClusterFixture : ThreeHostClusterFixture
{
    public const int Attempts = 4;

    protected override void ConfigureSilo(ISiloBuilder silo) =>
        silo.Services.Configure<BackupOptions>(o =>
        {
            o.FinishAttempts = Attempts;
            o.FinishRetryDelay = TimeSpan.FromMilliseconds(50);
            o.FinishRetryBudget = TimeSpan.FromSeconds(60);
            o.ReconcileInterval = TimeSpan.FromMilliseconds(500);
        });
}

[CollectionDefinition(Name)]
public sealed class ShortBudgetClusterCollection : ICollectionFixture<ShortBudgetClusterFixture>
{
    public const string Name = "short-budget cluster";
}

[Collection(ShortBudgetClusterCollection.Name)]
public sealed class StateSafetyTests(ShortBudgetClusterFixture fixture)
{
    private static async Task<BackupRunView> WaitDoneAsync(IVirtualMachineGrain vm, BackupRunView run, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!run.IsTerminal)
        {
            Assert.True(DateTime.UtcNow < deadline, $"run still at {run.Step} after {timeout}: {run.Error}");
            run = await vm.WaitBackupAsync(run.RunKey.Split('/')[^1], run.Version, TimeSpan.FromSeconds(1));
        }

        return run;
    }

    private async Task<(IVirtualMachineGrain Vm, SimulatedHypervisor Hypervisor)> NewVmAsync(string host, string name)
    {
        var hypervisor = fixture.Hypervisors[host];
        hypervisor.AddDomain(name, DomainPowerState.Running, [("vda", "qcow2", 1L << 30)]);
        await fixture.Grains.GetGrain<IHostGrain>(host).SyncInventoryAsync();
        return (fixture.Grains.GetGrain<IVirtualMachineGrain>($"{host}/{name}"), hypervisor);
    }

    [Fact]
    public async Task StartBackup_CommitNeverStarts_FailsAfterTheBudgetWithTheVmOnItsOverlay()
    {
        var (vm, hypervisor) = await NewVmAsync("kvm-01", "budget-commit");
        hypervisor.InjectFault(SimulatedOperation.StartActiveCommit, new HypervisorException(HypervisorErrorKind.OperationFailed, "cannot reopen the base read-write"), times: 1000);
        try
        {
            var run = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest()), TimeSpan.FromSeconds(20));

            Assert.Equal(BackupStep.Failed, run.Step);
            Assert.Contains($"gave up after {ShortBudgetClusterFixture.Attempts} tries", run.Error, StringComparison.Ordinal);
            Assert.Contains("cannot reopen the base read-write", run.Error, StringComparison.Ordinal);
            Assert.Contains("still runs on overlays left in place", run.Error, StringComparison.Ordinal);

            // Safe: the VM keeps running on the overlay, a valid chain over its untouched base.
            var domain = await hypervisor.GetDomainAsync("budget-commit");
            Assert.Equal(DomainPowerState.Running, domain.State);
            Assert.Equal(run.Disks[0].OverlayPath, domain.Disks[0].SourcePath);
            Assert.True(await hypervisor.Images.ExistsAsync(run.Disks[0].OverlayPath));
            Assert.True(await hypervisor.Images.ExistsAsync(run.Disks[0].BasePath));
            Assert.False(Directory.Exists(run.BackupSetPath));

            // Nothing loops: the reconcile (every 0.5 s) leaves the finished run alone, and the lock is free.
            await Task.Delay(TimeSpan.FromSeconds(1.5));
            Assert.All(await vm.ListBackupsAsync(), r => Assert.True(r.IsTerminal));
            await fixture.Grains.GetGrain<IHostGrain>("kvm-01").SyncInventoryAsync();
            var view = await vm.GetAsync();
            Assert.Contains(".orch-", view.Disks[0].SourcePath, StringComparison.Ordinal);
            var refused = await Assert.ThrowsAsync<OrchestratorException>(() => vm.StartBackupAsync(new BackupRequest()));
            Assert.Equal(ErrorCode.FailedPrecondition, refused.Code);
            Assert.Contains("leftover backup overlay", refused.Message, StringComparison.Ordinal);
        }
        finally
        {
            hypervisor.ClearFaults();
        }
    }

    [Fact]
    public async Task RepairOverlays_AfterAGiveUp_CommitsTheRecordedOverlayBackAndTheNextBackupSucceeds()
    {
        var (vm, hypervisor) = await NewVmAsync("kvm-02", "repair-commit");
        hypervisor.InjectFault(SimulatedOperation.StartActiveCommit, new HypervisorException(HypervisorErrorKind.OperationFailed, "cannot reopen the base read-write"), times: 1000);
        BackupRunView run;
        try
        {
            run = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest()), TimeSpan.FromSeconds(20));
            Assert.Equal(BackupStep.Failed, run.Step);
            Assert.Contains("gave up", run.Error, StringComparison.Ordinal);

            // While the cause is not fixed, the repair fails like the run did and leaves the VM on its overlay.
            await Assert.ThrowsAnyAsync<Exception>(() => vm.RepairOverlaysAsync(dryRun: false));
            Assert.Equal(run.Disks[0].OverlayPath, (await hypervisor.GetDomainAsync("repair-commit")).Disks[0].SourcePath);
        }
        finally
        {
            hypervisor.ClearFaults();
        }

        var disk = run.Disks[0];
        var planned = Assert.Single(await vm.RepairOverlaysAsync(dryRun: true));
        Assert.Equal((OverlayRepairAction.WouldCommit, "vda", disk.OverlayPath, disk.BasePath, run.RunKey.Split('/')[^1]), (planned.Action, planned.Target, planned.OverlayPath, planned.BasePath, planned.RunId));
        Assert.Equal(disk.OverlayPath, (await hypervisor.GetDomainAsync("repair-commit")).Disks[0].SourcePath);

        var repaired = Assert.Single(await vm.RepairOverlaysAsync(dryRun: false));
        Assert.Equal(OverlayRepairAction.Committed, repaired.Action);
        var domain = await hypervisor.GetDomainAsync("repair-commit");
        Assert.Equal((disk.BasePath, 0), (domain.Disks[0].SourcePath, domain.Disks[0].BackingChain.Count));
        Assert.False(await hypervisor.Images.ExistsAsync(disk.OverlayPath));
        Assert.DoesNotContain(".orch-", (await vm.GetAsync()).Disks[0].SourcePath, StringComparison.Ordinal);

        // Nothing left: a second repair has nothing to do, and a backup is accepted and completes again.
        Assert.Empty(await vm.RepairOverlaysAsync(dryRun: false));
        var next = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest()), TimeSpan.FromSeconds(20));
        Assert.True(next.Step == BackupStep.Completed, $"{next.Step}: {next.Error}");
    }

    [Fact]
    public async Task RepairOverlays_AnOverlayNoRunRecorded_IsRefusedAndLeftAsItIs()
    {
        var (vm, hypervisor) = await NewVmAsync("kvm-03", "repair-foreign");
        var basePath = (await hypervisor.GetDomainAsync("repair-foreign")).Disks[0].SourcePath;
        var foreign = basePath + ".orch-someone-else.qcow2";
        await hypervisor.CreateExternalSnapshotAsync("repair-foreign", [new OverlaySpec("vda", foreign)]);

        var refused = Assert.Single(await vm.RepairOverlaysAsync(dryRun: false));

        Assert.Equal((OverlayRepairAction.Refused, foreign, null), (refused.Action, refused.OverlayPath, refused.RunId));
        Assert.Contains("not ours", refused.Reason, StringComparison.Ordinal);
        var domain = await hypervisor.GetDomainAsync("repair-foreign");
        Assert.Equal((foreign, basePath), (domain.Disks[0].SourcePath, domain.Disks[0].BackingChain[0].Path));
        Assert.True(await hypervisor.Images.ExistsAsync(foreign));
    }

    [Fact]
    public async Task StartBackup_WhileCallsAndSyncsWriteTheSameVm_NoWriteConflict()
    {
        // Memory storage answers through a storage grain (a real await), so interleaved writes really overlap.
        var (vm, hypervisor) = await NewVmAsync("kvm-03", "stress-writes");
        var host = fixture.Grains.GetGrain<IHostGrain>("kvm-03");
        var failures = new List<string>();
        using var stop = new CancellationTokenSource();

        async Task HammerAsync(Func<Task> call)
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    await call();
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    lock (failures)
                    {
                        failures.Add($"{e.GetType().Name}: {e.Message}");
                    }
                }
            }
        }

        var hammers = new[]
        {
            HammerAsync(async () =>
            {
                await vm.SetCheckpointScheduleAsync(new CheckpointSchedule("@hourly", "UTC", TimeSpan.Zero, new RetentionPolicy(KeepLast: 3)));
                await vm.DeleteCheckpointScheduleAsync();
            }),
            HammerAsync(async () => await host.SyncInventoryAsync()),
            HammerAsync(async () => await vm.GetAsync()),
            HammerAsync(async () => await vm.ListCheckpointsAsync()),
        };
        var speed = hypervisor.Options.CopyBytesPerSecond;
        try
        {
            hypervisor.Options.CopyBytesPerSecond = 4L << 30;
            for (var done = 0; done < 5;)
            {
                BackupRunView started;
                try
                {
                    started = await vm.StartBackupAsync(new BackupRequest());
                }
                catch (OrchestratorException e) when (e.Code == ErrorCode.FailedPrecondition && e.Message.Contains("expected", StringComparison.Ordinal))
                {
                    // A sync that read the chain while the last run's overlay was active landed after it: wait for the next.
                    await Task.Delay(20);
                    continue;
                }

                var run = await WaitDoneAsync(vm, started, TimeSpan.FromSeconds(30));
                Assert.True(run.Step == BackupStep.Completed, $"{run.Step}: {run.Error}");
                done++;
            }
        }
        finally
        {
            hypervisor.Options.CopyBytesPerSecond = speed;
            await stop.CancelAsync();
            await Task.WhenAll(hammers);
        }

        Assert.True(failures.Count == 0, $"{failures.Count} calls failed, e.g. {failures.FirstOrDefault()}");
    }

    [Fact]
    public async Task SyncInventory_DomainNameNotAValidKey_SkippedAndTheOtherVmsSynced()
    {
        var hypervisor = fixture.Hypervisors["kvm-02"];
        hypervisor.AddDomain("bad\u0001name", DomainPowerState.Running, [("vda", "qcow2", 1L << 30)]);
        hypervisor.AddDomain(" padded", DomainPowerState.Running, [("vda", "qcow2", 1L << 30)]);
        hypervisor.AddDomain("sync-good", DomainPowerState.Running, [("vda", "qcow2", 1L << 30)]);

        var host = await fixture.Grains.GetGrain<IHostGrain>("kvm-02").SyncInventoryAsync();

        Assert.Null(host.LastSyncError);
        var vms = (await fixture.Grains.GetGrain<IHostGrain>("kvm-02").ListVmsAsync()).Select(v => v.Name).ToList();
        Assert.Contains("sync-good", vms);
        Assert.Contains("web-2", vms);
        Assert.DoesNotContain("bad\u0001name", vms);
        Assert.DoesNotContain(" padded", vms);
    }

    [Fact]
    public void Track_RunEndedWithAnOverlayLeftInPlace_StillCountedAsAliveButNotActive()
    {
        const string Host = "gauge-left-host";
        var vm = new object();
        try
        {
            BackupGauges.Track(vm, Host, new BackupRunState { Step = BackupStep.Failed, Disks = [new BackupDiskState()] }, overlaysLeft: 1);

            Assert.Equal(1, BackupGauges.ObserveOverlays().Single(m => Equals(m.Tags[0].Value, Host)).Value);
            Assert.Equal(0, BackupGauges.ObserveActive().Single(m => Equals(m.Tags[0].Value, Host)).Value);

            BackupGauges.Track(vm, Host, null, overlaysLeft: 0);
            Assert.Equal(0, BackupGauges.ObserveOverlays().Single(m => Equals(m.Tags[0].Value, Host)).Value);
        }
        finally
        {
            BackupGauges.Forget(vm);
        }
    }
}
