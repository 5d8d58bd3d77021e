using Microsoft.Extensions.Logging.Abstractions;
using Orchestrator.Grains.Backups;
using Orchestrator.Grains.VirtualMachines;
using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Simulated;

namespace Orchestrator.UnitTests.Cluster;

/// <summary>Backups of shut-off VMs (the offline copy) and of paused ones (the live method), through the VM grain.</summary>
[Collection(ThreeHostClusterCollection.Name)]
public sealed class OfflineBackupTests(ThreeHostClusterFixture fixture)
{
    private static async Task<BackupRunView> WaitAsync(IVirtualMachineGrain vm, BackupRunView run, Func<BackupRunView, bool> until)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!until(run))
        {
            Assert.True(DateTime.UtcNow < deadline, $"run stuck at {run.Step}");
            run = await vm.WaitBackupAsync(run.RunKey.Split('/')[^1], run.Version, TimeSpan.FromSeconds(5));
        }

        return run;
    }

    private static Task<BackupRunView> WaitDoneAsync(IVirtualMachineGrain vm, BackupRunView run) => WaitAsync(vm, run, r => r.IsTerminal);

    private async Task<(IVirtualMachineGrain Vm, SimulatedHypervisor Hypervisor)> NewVmAsync(string host, string name, DomainPowerState state, params (string, string, long)[] disks)
    {
        var hypervisor = fixture.Hypervisors[host];
        hypervisor.AddDomain(name, state, disks);
        await fixture.Grains.GetGrain<IHostGrain>(host).SyncInventoryAsync();
        return (fixture.Grains.GetGrain<IVirtualMachineGrain>($"{host}/{name}"), hypervisor);
    }

    [Fact]
    public async Task StartBackup_ShutOffVm_CopiedOfflineVerifiedRestorableAndNeverStarted()
    {
        var (vm, hypervisor) = await NewVmAsync("kvm-01", "off-ok", DomainPowerState.ShutOff, ("vda", "qcow2", 1L << 30), ("vdb", "raw", 1L << 28));
        var before = await hypervisor.GetDomainAsync("off-ok");
        var events = new List<DomainEvent>();
        void OnEvent(object? sender, DomainEvent e)
        {
            if (e.Domain == "off-ok")
            {
                lock (events)
                {
                    events.Add(e);
                }
            }
        }

        hypervisor.DomainEvent += OnEvent;
        BackupRunView run;
        try
        {
            run = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest { Quiesce = QuiesceMode.Try }));
        }
        finally
        {
            hypervisor.DomainEvent -= OnEvent;
        }

        Assert.True(run.Step == BackupStep.Completed, run.Error);
        Assert.Equal(BackupMethod.Offline, run.Method);
        Assert.Contains("not needed", run.QuiesceOutcome, StringComparison.Ordinal);
        Assert.DoesNotContain(run.Steps, s => s.Step is BackupStep.Quiesce or BackupStep.OverlayActive or BackupStep.Committing or BackupStep.Cleaning);
        Assert.Contains(run.Steps, s => s.Step == BackupStep.Copying);
        Assert.Contains(run.Steps, s => s.Step == BackupStep.Verifying);
        lock (events)
        {
            Assert.Empty(events); // never started, paused or redefined
        }

        var after = await hypervisor.GetDomainAsync("off-ok");
        Assert.Equal(DomainPowerState.ShutOff, after.State);
        Assert.Equal(before.Disks.Select(d => d.SourcePath), after.Disks.Select(d => d.SourcePath));
        Assert.All(run.Disks, d => Assert.True(d.Committed && d.Verified && d.Sha256 is { Length: 64 } && d.OverlayPath.Length == 0));
        Assert.Equal(["qcow2", "raw"], run.Disks.Select(d => Path.GetExtension(d.BackupPath)[1..]));
        foreach (var disk in run.Disks)
        {
            Assert.True(await hypervisor.Images.ExistsAsync(disk.BackupPath));
        }

        using (var manifest = System.Text.Json.JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(run.BackupSetPath, "manifest.json"))))
        {
            Assert.Equal("offline", manifest.RootElement.GetProperty("method").GetString());
            Assert.Equal(2, manifest.RootElement.GetProperty("disks").GetArrayLength());
        }

        // The set restores as a live one does: a new VM from its manifest.
        var restored = await vm.RestoreAsync(new RestoreRequest(run.RunKey, "off-ok-restored", Define: true));
        Assert.True(restored.Defined);
        Assert.Equal(restored.Images, (await hypervisor.GetDomainAsync("off-ok-restored")).Disks.Select(d => d.SourcePath));
    }

    [Fact]
    public async Task StartBackup_PausedVm_BackedUpLiveAndStaysPaused()
    {
        var (vm, hypervisor) = await NewVmAsync("kvm-01", "paused-ok", DomainPowerState.Paused, ("vda", "qcow2", 1L << 30));

        var run = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest { Quiesce = QuiesceMode.Try }));

        Assert.True(run.Step == BackupStep.Completed, run.Error);
        Assert.Equal(BackupMethod.Live, run.Method);
        Assert.Contains("paused", run.QuiesceOutcome, StringComparison.Ordinal);
        var after = await hypervisor.GetDomainAsync("paused-ok");
        Assert.Equal(DomainPowerState.Paused, after.State);
        Assert.All(after.Disks, d => Assert.Empty(d.BackingChain));
        Assert.False(await hypervisor.Images.ExistsAsync(run.Disks[0].OverlayPath));
        Assert.True(await hypervisor.Images.ExistsAsync(run.Disks[0].BackupPath));
    }

    [Fact]
    public async Task StartBackup_PausedVmQuiesceRequired_FailsWithTheReasonAndStaysPausedWithoutOverlays()
    {
        var (vm, hypervisor) = await NewVmAsync("kvm-01", "paused-req", DomainPowerState.Paused, ("vda", "qcow2", 1L << 30));

        var run = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest { Quiesce = QuiesceMode.Required }));

        Assert.Equal(BackupStep.Failed, run.Step);
        Assert.Contains("paused", run.Error, StringComparison.Ordinal);
        var after = await hypervisor.GetDomainAsync("paused-req");
        Assert.Equal(DomainPowerState.Paused, after.State);
        Assert.All(after.Disks, d => Assert.Empty(d.BackingChain));
        Assert.False(Directory.Exists(run.BackupSetPath));
    }

    [Fact]
    public async Task StartBackup_ShutOffVmStartedDuringTheCopy_CopyDiscardedAndTheRunGoesOnLive()
    {
        var (vm, hypervisor) = await NewVmAsync("kvm-03", "off-start", DomainPowerState.ShutOff, ("vda", "qcow2", 4L << 30));
        hypervisor.Options.CopyBytesPerSecond = 256L << 20; // 1 GiB allocated: about 4 s per copy
        try
        {
            var run = await vm.StartBackupAsync(new BackupRequest());
            // Mid-copy: bytes copied (at the Copying intent alone the VM would be found started before the copy began).
            run = await WaitAsync(vm, run, r => (r.Step == BackupStep.Copying && r.Disks.Any(d => d.BytesCopied > 0)) || r.IsTerminal);
            Assert.Equal(BackupMethod.Offline, run.Method);

            await hypervisor.StartDomainAsync("off-start");
            run = await WaitDoneAsync(vm, run);

            Assert.True(run.Step == BackupStep.Completed, run.Error);
            Assert.Equal(BackupMethod.Live, run.Method);
            Assert.Contains(run.Steps, s => s.Note?.Contains("the copy was discarded", StringComparison.Ordinal) == true);
            Assert.Contains(run.Steps, s => s.Step == BackupStep.Quiesce && s.Note?.Contains("backing the VM up live instead", StringComparison.Ordinal) == true);
            Assert.Contains(run.Steps, s => s.Step == BackupStep.Committing);
            var after = await hypervisor.GetDomainAsync("off-start");
            Assert.Equal(DomainPowerState.Running, after.State);
            Assert.All(after.Disks, d => Assert.Empty(d.BackingChain));
            Assert.False(await hypervisor.Images.ExistsAsync(run.Disks[0].OverlayPath));
            Assert.True(await hypervisor.Images.ExistsAsync(run.Disks[0].BackupPath));
        }
        finally
        {
            hypervisor.Options.CopyBytesPerSecond = 0;
        }
    }
}

/// <summary>
/// The offline workflow cut off by a crash at its kill point (CrashTestObserver.Points: OfflineCopying) and run again
/// from what it had persisted, as a new activation does.
/// </summary>
public sealed class OfflineBackupCrashTests : IDisposable
{
    private const string Host = "kvm-x";
    private const string Vm = "off-crash";
    private readonly string _root = Path.Combine(Path.GetTempPath(), $"orchestrator-offline-{Guid.NewGuid():N}");
    private readonly SimulatedHypervisor _hypervisor = new(new SimulatedOptions { HostName = Host });

    public void Dispose()
    {
        if (Directory.Exists(_root))
        {
            Directory.Delete(_root, recursive: true);
        }
    }

    private LiveBackupContext Context => new(_hypervisor, new HostVmLocks(), new BackupOptions { Roots = [_root], DefaultTarget = _root }, TimeProvider.System, NullLogger.Instance, Host, Vm, $"{Host}/{Vm}");

    private async Task<BackupRunState> AdmitAsync()
    {
        var domain = _hypervisor.AddDomain(Vm, DomainPowerState.ShutOff, [("vda", "qcow2", 1L << 30), ("vdb", "raw", 1L << 28)]);
        var inventory = domain.Disks.Select(d => new VmDiskRecord { Target = d.Target, SourcePath = d.SourcePath, Format = d.Format, ChainDepth = d.ChainDepth }).ToList();
        return await OfflineBackupWorkflow.PreflightAsync(Context, [], "b-20261207-120000-abcdef", _root, new BackupRequest(), DateTimeOffset.UtcNow, inventory, CancellationToken.None);
    }

    /// <summary>Runs the workflow until the crash point: cancelled there, as a killed process stops (no compensation, nothing persisted after).</summary>
    private async Task<InMemoryBackupRunRecords> CrashAtAsync(BackupRunState run, string point)
    {
        Assert.Contains(point, CrashTestObserver.Points);
        var records = new InMemoryBackupRunRecords(run);
        using var crash = new CancellationTokenSource();
        var observer = new CrashTestObserver(point, NullLogger.Instance, _ =>
        {
            crash.Cancel();
            crash.Token.ThrowIfCancellationRequested();
        });
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => new OfflineBackupWorkflow(Context, run, records, [observer]).RunAsync(crash.Token));
        Assert.Empty(records.Finished);
        return records;
    }

    [Fact]
    public async Task Resume_KilledMidOfflineCopy_CopiesAgainFromZeroAndCompletes()
    {
        var records = await CrashAtAsync(await AdmitAsync(), "OfflineCopying");
        var persisted = records.Persisted!;
        Assert.Equal(BackupStep.Copying, persisted.Step);
        Assert.Equal(1, persisted.OfflineAttempts);
        Assert.All(persisted.Disks, d => Assert.False(d.Copied)); // no disk's result was persisted

        // The next activation: the persisted run, driven again.
        var resumed = new InMemoryBackupRunRecords(persisted);
        await new OfflineBackupWorkflow(Context, persisted, resumed, []).RunAsync(CancellationToken.None);

        Assert.Equal([BackupStep.Completed], resumed.Finished);
        Assert.Equal(2, persisted.OfflineAttempts);
        Assert.Null(persisted.Error);
        Assert.All(persisted.Disks, d => Assert.True(d.Copied && d.Sha256 is { Length: 64 }));
        foreach (var disk in persisted.Disks)
        {
            Assert.True(await _hypervisor.Images.ExistsAsync(disk.BackupPath));
        }

        Assert.True(File.Exists(Path.Combine(persisted.BackupSetPath, "manifest.json")));
        Assert.Equal(DomainPowerState.ShutOff, (await _hypervisor.GetDomainAsync(Vm)).State);
    }

    [Fact]
    public async Task Resume_VmStartedWhileTheSiloWasDown_PartialCopiesDeletedAndHandedToTheLiveMethod()
    {
        var records = await CrashAtAsync(await AdmitAsync(), "OfflineCopying");
        var persisted = records.Persisted!;
        await _hypervisor.StartDomainAsync(Vm);

        var resumed = new InMemoryBackupRunRecords(persisted);
        await new OfflineBackupWorkflow(Context, persisted, resumed, []).RunAsync(CancellationToken.None);

        // Not finished here: the run is the live method's now, persisted at its first intent, its overlays named.
        Assert.Empty(resumed.Finished);
        Assert.Equal(BackupMethod.Live, resumed.Persisted!.Method);
        Assert.Equal(BackupStep.Quiesce, resumed.Persisted.Step);
        Assert.All(persisted.Disks, d => Assert.True(d.OverlayPath.Contains(".orch-", StringComparison.Ordinal) && !d.Committed && !d.Copied));
        foreach (var disk in persisted.Disks)
        {
            Assert.False(await _hypervisor.Images.ExistsAsync(disk.BackupPath));
        }

        // ... which finishes it as for any running VM.
        await new LiveBackupWorkflow(Context, persisted, resumed, []).RunAsync(CancellationToken.None);
        Assert.Equal([BackupStep.Completed], resumed.Finished);
        Assert.All((await _hypervisor.GetDomainAsync(Vm)).Disks, d => Assert.Empty(d.BackingChain));
    }
}
