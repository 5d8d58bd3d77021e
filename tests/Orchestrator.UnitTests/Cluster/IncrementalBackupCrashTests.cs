using MessagePack;
using Microsoft.Extensions.Logging.Abstractions;
using Orchestrator.Grains.Backups;
using Orchestrator.Grains.VirtualMachines;
using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Simulated;

namespace Orchestrator.UnitTests.Cluster;

/// <summary>
/// The backup-job (incremental) workflow cut off by a crash at its kill points (CrashTestObserver.Points:
/// IncrementalJob, IncrementalCopied) and run again from what it had persisted, as a new activation does: it finishes,
/// or rolls back to the chain it had (no checkpoint of the run left, no job, no set), never a half-moved chain.
/// </summary>
public sealed class IncrementalBackupCrashTests : IDisposable
{
    private const string Host = "kvm-x";
    private const string Vm = "inc-crash";
    private readonly string _root = Path.Combine(Path.GetTempPath(), $"orchestrator-inc-crash-{Guid.NewGuid():N}");
    private readonly SimulatedHypervisor _hypervisor = new(new SimulatedOptions { HostName = Host, CopyBytesPerSecond = 64L << 20 });
    private readonly ChainRecords _chain = new();
    private int _runs;

    public IncrementalBackupCrashTests() =>
        _hypervisor.AddDomain(Vm, DomainPowerState.Running, [("vda", "qcow2", 256L << 20), ("vdb", "raw", 16L << 20)]);

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
        var domain = await _hypervisor.GetDomainAsync(Vm);
        var inventory = domain.Disks.Select(d => new VmDiskRecord { Target = d.Target, SourcePath = d.SourcePath, Format = d.Format, ChainDepth = d.ChainDepth }).ToList();
        _hypervisor.SimulateGuestWrites(Vm, 4L << 20);
        var runId = $"b-20261207-1200{_runs++:D2}-abcdef";
        return await IncrementalBackupWorkflow.PreflightAsync(Context, [], runId, _root, new BackupRequest { Incremental = true }, DateTimeOffset.UtcNow, inventory, _chain, CancellationToken.None);
    }

    private async Task<BackupRunState> CompletedAsync()
    {
        var run = await AdmitAsync();
        var records = new InMemoryBackupRunRecords(run);
        await new IncrementalBackupWorkflow(Context, run, records, _chain, []).RunAsync(CancellationToken.None);
        Assert.Equal([BackupStep.Completed], records.Finished);
        return run;
    }

    /// <summary>Runs the workflow until the crash point: cancelled there, as a killed process stops (no compensation, nothing persisted after).</summary>
    private async Task<BackupRunState> CrashAtAsync(BackupRunState run, string point)
    {
        Assert.Contains(point, CrashTestObserver.Points);
        var records = new InMemoryBackupRunRecords(run);
        using var crash = new CancellationTokenSource();
        var observer = new CrashTestObserver(point, NullLogger.Instance, _ =>
        {
            crash.Cancel();
            crash.Token.ThrowIfCancellationRequested();
        });
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => new IncrementalBackupWorkflow(Context, run, records, _chain, [observer]).RunAsync(crash.Token));
        Assert.Empty(records.Finished);
        return records.Persisted!;
    }

    private async Task<BackupJobStatus> WaitForJobEndAsync()
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (true)
        {
            var status = await _hypervisor.GetBackupJobAsync(Vm);
            if (status.State != BackupJobState.Running)
            {
                return status;
            }

            Assert.True(DateTime.UtcNow < deadline, "the simulated job never ended");
            await Task.Delay(20);
        }
    }

    [Fact]
    public async Task Resume_KilledWhileTheJobRuns_WaitsForItsEndAndCompletesMovingTheChainOn()
    {
        var full = await CompletedAsync();
        var persisted = await CrashAtAsync(await AdmitAsync(), "IncrementalJob");
        Assert.Equal(BackupStep.Copying, persisted.Step);
        Assert.Equal(BackupLevels.Incremental, persisted.Level);
        Assert.Equal(full.RunId, _chain.Chain!.LastRunId); // the chain has not moved yet

        var resumed = new InMemoryBackupRunRecords(persisted);
        await new IncrementalBackupWorkflow(Context, persisted, resumed, _chain, []).RunAsync(CancellationToken.None);

        Assert.Equal([BackupStep.Completed], resumed.Finished);
        Assert.Equal((persisted.RunId, 2), (_chain.Chain!.LastRunId, _chain.Chain.Length));
        Assert.Equal(["orch-" + persisted.RunId], (await _hypervisor.ListCheckpointsAsync(Vm)).Select(c => c.Name));
        Assert.True(File.Exists(Path.Combine(persisted.BackupSetPath, "manifest.json")));
        Assert.Equal(BackupJobState.None, (await _hypervisor.GetBackupJobAsync(Vm)).State);
    }

    [Fact]
    public async Task Resume_KilledWhileTheJobRanAndItsEndWasLost_RollsBackToTheParentChainNothingOrphaned()
    {
        var full = await CompletedAsync();
        var persisted = await CrashAtAsync(await AdmitAsync(), "IncrementalJob");

        // The job ended while the silo was down and its one-time end was read by someone else (libvirtd restarted):
        // its outcome is unknown, so the run must not trust its copies.
        Assert.Equal(BackupJobState.Completed, (await WaitForJobEndAsync()).State);
        var resumed = new InMemoryBackupRunRecords(persisted);
        await new IncrementalBackupWorkflow(Context, persisted, resumed, _chain, []).RunAsync(CancellationToken.None);

        Assert.Equal([BackupStep.Failed], resumed.Finished);
        Assert.Equal((full.RunId, 1, "orch-" + full.RunId), (_chain.Chain!.LastRunId, _chain.Chain.Length, _chain.Chain.Checkpoint));
        Assert.Null(_chain.Chain.InvalidatedBy);
        Assert.Equal(["orch-" + full.RunId], (await _hypervisor.ListCheckpointsAsync(Vm)).Select(c => c.Name)); // the run's checkpoint merged back
        Assert.False(Directory.Exists(persisted.BackupSetPath));
        Assert.Equal(BackupJobState.None, (await _hypervisor.GetBackupJobAsync(Vm)).State);

        // The chain goes on from the full: the next run is an incremental on it.
        var next = await CompletedAsync();
        Assert.Equal((BackupLevels.Incremental, full.RunId), (next.Level, next.ParentRunId));
    }

    [Fact]
    public async Task Resume_KilledAfterTheCopyBeforeTheManifest_VerifiesWritesTheManifestAndCompletes()
    {
        var full = await CompletedAsync();
        var persisted = await CrashAtAsync(await AdmitAsync(), "IncrementalCopied");
        Assert.Equal(BackupStep.Verifying, persisted.Step);
        Assert.False(File.Exists(Path.Combine(persisted.BackupSetPath, "manifest.json")));
        Assert.Equal(full.RunId, _chain.Chain!.LastRunId);

        var resumed = new InMemoryBackupRunRecords(persisted);
        await new IncrementalBackupWorkflow(Context, persisted, resumed, _chain, []).RunAsync(CancellationToken.None);

        Assert.Equal([BackupStep.Completed], resumed.Finished);
        Assert.Equal(persisted.RunId, _chain.Chain!.LastRunId);
        Assert.Equal(["orch-" + persisted.RunId], (await _hypervisor.ListCheckpointsAsync(Vm)).Select(c => c.Name));

        // The resumed set is a whole chain point: its header re-pointed to the full's image, its manifest written.
        var vda = persisted.Disks.Single(d => d.Target == "vda");
        Assert.Equal($"../{full.RunId}/vda.qcow2", (await _hypervisor.Images.InfoAsync(vda.BackupPath, "qcow2")).BackingEntry);
        var manifest = BackupSetManifest.Read(persisted.BackupSetPath, $"{Host}/{Vm}/{persisted.RunId}", Context.Options);
        Assert.Equal(("incremental", full.RunId, 1), (manifest.Level, manifest.ParentRunId, manifest.ChainIndex ?? -1));
    }

    /// <summary>The VM's chain as the grain persists it.</summary>
    private sealed class ChainRecords : IIncrementalChainRecords
    {
        public IncrementalChainState? Chain { get; private set; }

        public Task SaveChainAsync(IncrementalChainState? chain, CancellationToken cancellationToken)
        {
            Chain = chain is null ? null : MessagePackSerializer.Deserialize<IncrementalChainState>(MessagePackSerializer.Serialize(chain, cancellationToken: cancellationToken), cancellationToken: cancellationToken);
            return Task.CompletedTask;
        }
    }
}
