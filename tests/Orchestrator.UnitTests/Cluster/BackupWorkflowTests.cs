using Microsoft.Extensions.DependencyInjection;
using Orchestrator.Grains.Backups;
using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Simulated;

namespace Orchestrator.UnitTests.Cluster;

/// <summary>The live-backup state machine against the simulated hypervisor in the three-host cluster.</summary>
[Collection(ThreeHostClusterCollection.Name)]
public sealed class BackupWorkflowTests(ThreeHostClusterFixture fixture)
{
    private static async Task<BackupRunView> WaitDoneAsync(IVirtualMachineGrain vm, BackupRunView run)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!run.IsTerminal)
        {
            Assert.True(DateTime.UtcNow < deadline, $"run stuck at {run.Step}");
            run = await vm.WaitBackupAsync(run.RunKey.Split('/')[^1], run.Version, TimeSpan.FromSeconds(5));
        }

        return run;
    }

    private async Task<(IVirtualMachineGrain Vm, SimulatedHypervisor Hypervisor)> NewVmAsync(string host, string name, params (string, string, long)[] disks)
    {
        var hypervisor = fixture.Hypervisors[host];
        hypervisor.AddDomain(name, DomainPowerState.Running, disks);
        await fixture.Grains.GetGrain<IHostGrain>(host).SyncInventoryAsync();
        return (fixture.Grains.GetGrain<IVirtualMachineGrain>($"{host}/{name}"), hypervisor);
    }

    [Fact]
    public async Task StartBackup_RunningTwoDiskVm_CompletesAndLeavesTheBasesActive()
    {
        var (vm, hypervisor) = await NewVmAsync("kvm-01", "bk-ok", ("vda", "qcow2", 1L << 30), ("vdb", "raw", 1L << 29));
        var before = await hypervisor.GetDomainAsync("bk-ok");

        var run = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest()));

        Assert.Equal(BackupStep.Completed, run.Step);
        Assert.Null(run.Error);
        Assert.Equal(
            [BackupStep.Admitted, BackupStep.Preflight, BackupStep.Quiesce, BackupStep.OverlayActive, BackupStep.Copying, BackupStep.Copying, BackupStep.Copying, BackupStep.Committing, BackupStep.Cleaning, BackupStep.Verifying, BackupStep.Completed],
            run.Steps.Select(s => s.Step));
        var after = await hypervisor.GetDomainAsync("bk-ok");
        Assert.Equal(before.Disks.Select(d => d.SourcePath), after.Disks.Select(d => d.SourcePath));
        Assert.All(after.Disks, d => Assert.Empty(d.BackingChain));
        Assert.All(run.Disks, d => Assert.True(d.Committed && d.Verified && d.Sha256 is { Length: 64 }));
        foreach (var disk in run.Disks)
        {
            Assert.False(await hypervisor.Images.ExistsAsync(disk.OverlayPath));
            Assert.True(await hypervisor.Images.ExistsAsync(disk.BackupPath));
        }

        Assert.True(File.Exists(Path.Combine(run.BackupSetPath, "manifest.json")));
        Assert.Equal(DomainPowerState.Running, after.State);
    }

    [Theory]
    [InlineData(0L, 3)]
    [InlineData(64L << 20, 1)]
    public async Task StartBackup_ThreeDisks_CopiedSideBySideUnlessABandwidthLimitIsSet(long bandwidth, int expectedConcurrency)
    {
        var name = $"bk-par-{expectedConcurrency}";
        var (vm, hypervisor) = await NewVmAsync("kvm-03", name, ("vda", "qcow2", 64L << 20), ("vdb", "raw", 64L << 20), ("vdc", "qcow2", 64L << 20));
        var speed = hypervisor.Options.CopyBytesPerSecond;
        BackupRunView run;
        try
        {
            // Each copy takes about a quarter of a second, long enough to overlap.
            hypervisor.Options.CopyBytesPerSecond = 256L << 20;
            hypervisor.ResetCopyStats();
            run = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest { BandwidthBytesPerSecond = bandwidth }));
        }
        finally
        {
            hypervisor.Options.CopyBytesPerSecond = speed;
        }

        Assert.Equal(BackupStep.Completed, run.Step);
        Assert.Equal(expectedConcurrency, hypervisor.MaxConcurrentCopies);
        Assert.All(run.Disks, d => Assert.True(d.Verified && d.Sha256 is { Length: 64 }));

        // Still one step record per disk copied.
        Assert.Equal(3, run.Steps.Count(s => s.Step == BackupStep.Copying && s.Note is { } n && n.Contains(" bytes in ", StringComparison.Ordinal)));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task StartBackup_CopyWritesOtherBytesThanItRead_FailsAtTheReadBackEvenWithoutVerify(bool verify)
    {
        var (vm, hypervisor) = await NewVmAsync("kvm-02", $"bk-corrupt-{verify}", ("vda", "qcow2", 64L << 20));
        hypervisor.CorruptNextCopies();

        var run = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest { Verify = verify }));

        Assert.Equal(BackupStep.Failed, run.Step);
        Assert.Contains("does not match what was copied", run.Error, StringComparison.Ordinal);

        // The read-back happens after the commit: the VM is back on its base, no overlay left.
        var domain = await hypervisor.GetDomainAsync($"bk-corrupt-{verify}");
        Assert.Equal(run.Disks[0].BasePath, domain.Disks[0].SourcePath);
        Assert.False(await hypervisor.Images.ExistsAsync(run.Disks[0].OverlayPath));
    }

    [Theory]
    [InlineData("raw", BackupStep.Completed)]
    [InlineData("qcow2", BackupStep.Failed)]
    public async Task StartBackup_QemuImgCheckWouldFail_OnlyAQcow2CopyIsChecked(string format, BackupStep expected)
    {
        // A raw copy has no metadata for qemu-img check to walk: reading it back and matching the digest taken while
        // copying is its verification, and no check process is started for it. A qcow2 copy is still checked.
        var name = $"bk-check-{format}";
        var (vm, hypervisor) = await NewVmAsync("kvm-03", name, ("vda", format, 64L << 20));
        hypervisor.InjectFault(SimulatedOperation.Check, new HypervisorException(HypervisorErrorKind.OperationFailed, "check failed"));
        try
        {
            var run = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest { Verify = true }));

            Assert.Equal(expected, run.Step);
            if (expected == BackupStep.Completed)
            {
                Assert.True(run.Disks[0].Verified && run.Disks[0].Sha256 is { Length: 64 });
            }
            else
            {
                Assert.Contains("check failed", run.Error, StringComparison.Ordinal);
            }

            var domain = await hypervisor.GetDomainAsync(name);
            Assert.Equal(run.Disks[0].BasePath, domain.Disks[0].SourcePath);
            Assert.False(await hypervisor.Images.ExistsAsync(run.Disks[0].OverlayPath));
        }
        finally
        {
            hypervisor.ClearFaults();
        }
    }

    [Fact]
    public async Task StartBackup_CopyFails_CommitsBackAndFails()
    {
        var (vm, hypervisor) = await NewVmAsync("kvm-02", "bk-copyfail", ("vda", "qcow2", 1L << 30));
        hypervisor.InjectFault(SimulatedOperation.Copy, new IOException("No space left on device"));

        var run = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest()));

        Assert.Equal(BackupStep.Failed, run.Step);
        Assert.True(run.RollingBack);
        Assert.Contains("target out of space", run.Error, StringComparison.Ordinal);
        var domain = await hypervisor.GetDomainAsync("bk-copyfail");
        Assert.Equal(run.Disks[0].BasePath, domain.Disks[0].SourcePath);
        Assert.False(await hypervisor.Images.ExistsAsync(run.Disks[0].OverlayPath));
        Assert.False(Directory.Exists(run.BackupSetPath));
    }

    [Fact]
    public async Task StartBackup_PivotFailsOnce_RetriesAndCompletes()
    {
        var (vm, hypervisor) = await NewVmAsync("kvm-03", "bk-pivot", ("vda", "qcow2", 1L << 30));
        hypervisor.InjectFault(SimulatedOperation.Pivot, new HypervisorException(HypervisorErrorKind.OperationFailed, "block job not ready for pivot yet"));

        var run = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest()));

        Assert.Equal(BackupStep.Completed, run.Step);
    }

    [Fact]
    public async Task StartBackup_EverySiloSlotTaken_WaitsQueuedWithoutTouchingTheVmThenCompletes()
    {
        var (vm, hypervisor) = await NewVmAsync("kvm-02", "bk-queued", ("vda", "qcow2", 1L << 30), ("vdb", "raw", 1L << 29));
        var slots = fixture.SiloOf("kvm-02").ServiceProvider.GetRequiredService<BackupSlots>();
        var held = new List<BackupSlots.Lease>();
        while (slots.TryEnter() is { } lease)
        {
            held.Add(lease);
        }

        BackupRunView queued;
        try
        {
            var started = await vm.StartBackupAsync(new BackupRequest());
            queued = started;
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
            while (queued.Step != BackupStep.Queued)
            {
                Assert.True(DateTime.UtcNow < deadline, $"run at {queued.Step}, not queued");
                queued = await vm.WaitBackupAsync(started.RunKey.Split('/')[^1], queued.Version, TimeSpan.FromSeconds(2));
            }

            // Waiting, it holds the VM's lock and has touched nothing: no overlay, one waiting run on the silo.
            Assert.Equal(1, slots.WaitingCount);
            Assert.All((await hypervisor.GetDomainAsync("bk-queued")).Disks, d => Assert.DoesNotContain(".orch-", d.SourcePath, StringComparison.Ordinal));
            var e = await Assert.ThrowsAsync<OrchestratorException>(() => vm.StartBackupAsync(new BackupRequest()));
            Assert.Equal(ErrorCode.Conflict, e.Code);
        }
        finally
        {
            held.ForEach(l => l.Dispose());
        }

        var run = await WaitDoneAsync(vm, queued);
        Assert.Equal(BackupStep.Completed, run.Step);
        Assert.Equal(
            [BackupStep.Admitted, BackupStep.Preflight, BackupStep.Quiesce, BackupStep.Queued, BackupStep.Quiesce, BackupStep.OverlayActive, BackupStep.Copying, BackupStep.Copying, BackupStep.Copying, BackupStep.Committing, BackupStep.Cleaning, BackupStep.Verifying, BackupStep.Completed],
            run.Steps.Select(s => s.Step));
        Assert.Equal((0, 0), (slots.RunningCount, slots.WaitingCount));
    }

    [Fact]
    public async Task StartBackup_WhileAnotherRuns_Conflict()
    {
        var (vm, hypervisor) = await NewVmAsync("kvm-01", "bk-busy", ("vda", "qcow2", 1L << 30));
        hypervisor.Options.CopyBytesPerSecond = 1L << 30;
        try
        {
            var first = await vm.StartBackupAsync(new BackupRequest());
            var e = await Assert.ThrowsAsync<OrchestratorException>(() => vm.StartBackupAsync(new BackupRequest()));
            Assert.Equal(ErrorCode.Conflict, e.Code);
            Assert.Contains("busy", e.Message, StringComparison.Ordinal);
            Assert.Equal(BackupStep.Completed, (await WaitDoneAsync(vm, first)).Step);
        }
        finally
        {
            hypervisor.Options.CopyBytesPerSecond = 0;
        }
    }

    [Theory]
    [InlineData("/etc/backups")]
    [InlineData("relative/dir")]
    public async Task StartBackup_TargetOutsideRoots_InvalidArgumentNamingTarget(string target)
    {
        var vm = fixture.Grains.GetGrain<IVirtualMachineGrain>("kvm-01/web-1");
        var e = await Assert.ThrowsAsync<OrchestratorException>(() => vm.StartBackupAsync(new BackupRequest { Target = target }));
        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
        Assert.Equal("target", e.Field);
    }

    [Fact]
    public async Task StartBackup_TraversalOutOfTheRoot_Refused()
    {
        var vm = fixture.Grains.GetGrain<IVirtualMachineGrain>("kvm-01/web-1");
        var escape = Path.Combine(fixture.BackupRoot, "..", "..", "etc");
        var e = await Assert.ThrowsAsync<OrchestratorException>(() => vm.StartBackupAsync(new BackupRequest { Target = escape }));
        Assert.Equal("target", e.Field);
        Assert.Contains("outside the configured backup roots", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task QuiesceRequired_NoAgent_FailsCleanlyWithoutOverlays()
    {
        var (vm, hypervisor) = await NewVmAsync("kvm-03", "bk-noagent", ("vda", "qcow2", 1L << 30));
        var run = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest { Quiesce = QuiesceMode.Required }));
        Assert.Equal(BackupStep.Failed, run.Step);
        Assert.False(run.RollingBack);
        Assert.Contains("quiesce is required", run.Error, StringComparison.Ordinal);
        var domain = await hypervisor.GetDomainAsync("bk-noagent");
        Assert.Empty(domain.Disks[0].BackingChain);
        Assert.False(await hypervisor.Images.ExistsAsync(run.Disks[0].OverlayPath));
    }

    [Fact]
    public async Task QuiesceTry_NoAgent_FallsBackAndRecordsIt()
    {
        var (vm, _) = await NewVmAsync("kvm-03", "bk-try", ("vda", "qcow2", 1L << 30));
        var run = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest { Quiesce = QuiesceMode.Try }));
        Assert.Equal(BackupStep.Completed, run.Step);
        Assert.StartsWith("not frozen, crash-consistent", run.QuiesceOutcome, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(QuiesceMode.Try, BackupStep.Completed)]
    [InlineData(QuiesceMode.Required, BackupStep.Failed)]
    public async Task Quiesce_SnapshotSlowerThanTheFreezeBudget_GuestThawedAtTheBudget(QuiesceMode mode, BackupStep outcome)
    {
        var name = $"bk-slowsnap-{mode.ToString().ToLowerInvariant()}";
        var (vm, hypervisor) = await NewVmAsync("kvm-02", name, ("vda", "qcow2", 1L << 30));
        hypervisor.SetGuestAgent(name, true);
        var latency = hypervisor.Options.SnapshotLatency;
        hypervisor.Options.SnapshotLatency = TimeSpan.FromSeconds(2);
        BackupRunView run;
        try
        {
            run = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest { Quiesce = mode, FreezeBudget = TimeSpan.FromMilliseconds(200) }));
        }
        finally
        {
            hypervisor.Options.SnapshotLatency = latency;
        }

        Assert.Equal(outcome, run.Step);
        Assert.Contains("thawed at the freeze budget", run.QuiesceOutcome, StringComparison.Ordinal);
        Assert.True(run.FreezeMilliseconds < 1500, $"the guest stayed frozen {run.FreezeMilliseconds} ms with a 200 ms budget and a 2 s snapshot");

        // Either way the VM ends on its own image and no overlay is left.
        var domain = await hypervisor.GetDomainAsync(name);
        Assert.Empty(domain.Disks[0].BackingChain);
        Assert.False(await hypervisor.Images.ExistsAsync(run.Disks[0].OverlayPath));
    }

    [Fact]
    public async Task QuiesceTry_WithAgent_FreezesAndRecordsTheDuration()
    {
        var (vm, hypervisor) = await NewVmAsync("kvm-02", "bk-agent", ("vda", "qcow2", 1L << 30));
        hypervisor.SetGuestAgent("bk-agent", true);
        var run = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest { Quiesce = QuiesceMode.Try }));
        Assert.Equal(BackupStep.Completed, run.Step);
        Assert.StartsWith("frozen", run.QuiesceOutcome, StringComparison.Ordinal);
        Assert.True(run.FreezeMilliseconds > 0);
    }

    [Fact]
    public async Task Retention_KeepLastTwo_PrunesTheOldestSet()
    {
        var (vm, _) = await NewVmAsync("kvm-01", "bk-retain", ("vda", "qcow2", 1L << 30));
        var runs = new List<BackupRunView>();
        for (var i = 0; i < 3; i++)
        {
            runs.Add(await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest { Retention = new BackupRetention(KeepLast: 2) })));
            await Task.Delay(1100); // run ids and set directories are per second
        }

        Assert.All(runs, r => Assert.Equal(BackupStep.Completed, r.Step));
        Assert.False(Directory.Exists(runs[0].BackupSetPath));
        Assert.True(Directory.Exists(runs[1].BackupSetPath));
        Assert.True(Directory.Exists(runs[2].BackupSetPath));
    }

    [Fact]
    public async Task Restore_CompletedRun_DefinesANewVmWithNewUuid()
    {
        var (vm, hypervisor) = await NewVmAsync("kvm-02", "bk-restore", ("vda", "qcow2", 1L << 30), ("vdb", "raw", 1L << 28));
        var run = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest()));

        var restored = await vm.RestoreAsync(new RestoreRequest(run.RunKey, "bk-restored", Define: true));

        Assert.True(restored.Defined);
        var domain = await hypervisor.GetDomainAsync("bk-restored");
        Assert.NotEqual((await hypervisor.GetDomainAsync("bk-restore")).Uuid, domain.Uuid);
        Assert.Equal(restored.Images, domain.Disks.Select(d => d.SourcePath));
        var again = await Assert.ThrowsAsync<OrchestratorException>(() => vm.RestoreAsync(new RestoreRequest(run.RunKey, "bk-restored", Define: true)));
        Assert.Equal(ErrorCode.AlreadyExists, again.Code);
    }
}

/// <summary>The manifest records guest pauses measured from the VM's own lifecycle events.</summary>
[Collection(ThreeHostClusterCollection.Name)]
public sealed class BackupPauseTests(ThreeHostClusterFixture fixture)
{
    [Fact]
    public async Task Manifest_GuestPausedDuringCopy_RecordsThePauseFromEvents()
    {
        var hypervisor = fixture.Hypervisors["kvm-03"];
        hypervisor.AddDomain("bk-paused", DomainPowerState.Running, [("vda", "qcow2", 4L << 30)]);
        await fixture.Grains.GetGrain<IHostGrain>("kvm-03").SyncInventoryAsync();
        var vm = fixture.Grains.GetGrain<IVirtualMachineGrain>("kvm-03/bk-paused");
        hypervisor.Options.CopyBytesPerSecond = 512L << 20; // 1 GiB allocated: about 2 s of copying
        try
        {
            var run = await vm.StartBackupAsync(new BackupRequest());
            var runId = run.RunKey.Split('/')[^1];
            while (run.Step != BackupStep.Copying)
            {
                run = await vm.WaitBackupAsync(runId, run.Version, TimeSpan.FromSeconds(5));
            }

            await hypervisor.SuspendDomainAsync("bk-paused");
            await Task.Delay(300);
            await hypervisor.ResumeDomainAsync("bk-paused");
            while (!run.IsTerminal)
            {
                run = await vm.WaitBackupAsync(runId, run.Version, TimeSpan.FromSeconds(5));
            }

            Assert.Equal(BackupStep.Completed, run.Step);
            using var manifest = System.Text.Json.JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(run.BackupSetPath, "manifest.json")));
            var paused = manifest.RootElement.GetProperty("guest_paused_ms").GetDouble();
            Assert.InRange(paused, 250, 5000);
        }
        finally
        {
            hypervisor.Options.CopyBytesPerSecond = 0;
        }
    }
}
