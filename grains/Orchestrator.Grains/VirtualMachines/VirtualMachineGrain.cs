using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orchestrator.Grains.Backups;
using Orchestrator.Grains.Checkpoints;
using Orchestrator.Grains.Placement;
using Orchestrator.Grains.Storage;
using Orchestrator.Hypervisor;
using Orleans.Storage;

namespace Orchestrator.Grains.VirtualMachines;

[HostAffinePlacement]
internal sealed partial class VirtualMachineGrain(
    [PersistentState("vm", StorageNames.Default)] IPersistentState<VirtualMachineState> state,
    IHypervisor hypervisor,
    HostVmLocks fence,
    BackupSlots slots,
    IOptions<BackupOptions> backupOptions,
    TimeProvider time,
    CheckpointSchedulePlanner planner,
    ILogger<VirtualMachineGrain> logger) : Grain, IVirtualMachineGrain
{
    /// <summary>Every write of this grain's state goes through here: the backup task, syncs and calls interleave.</summary>
    private readonly StateWriteGate _writes = new(() => state.WriteStateAsync());

    private DateTimeOffset _lastSync;

    /// <summary>
    /// The disks as the last inventory saw them, when that differs from the stored record only by the active run's own
    /// overlays on top (null otherwise). Views show these; the stored record keeps the VM's own images, so a sync that
    /// finds a VM mid-backup writes nothing, nor does the one after it (issue 11: those were ~1 VM and ~2 chain writes
    /// per backup in the fleet benchmark). A restarted silo's first sync finds the overlays again.
    /// </summary>
    private List<VmDiskRecord>? _seenDisks;

    /// <summary>The disks as last seen: the active run's overlays included.</summary>
    private List<VmDiskRecord> SeenDisks => _seenDisks ?? state.State.Disks;

    private BackupHistoryStore? _history;

    /// <summary>Finished runs, in their own state ("vm-history"), read on demand.</summary>
    private BackupHistoryStore History => _history ??= new(ServiceProvider.GetRequiredKeyedService<IGrainStorage>(StorageNames.Default), this.GetGrainId());

    /// <summary>Set when deactivation starts: the backup task may still persist a step, but this activation no longer reports.</summary>
    private bool _deactivating;

    private (string Host, string Vm) Key => GrainKeys.ParseVm(this.GetPrimaryKeyString());

    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        // State written before the history had its own state is moved there first, and a run that ended just before
        // a crash (in the history, still active here) is settled, so nothing below sees a run twice.
        await MigrateLegacyHistoryAsync(cancellationToken);
        await SettleEndedActiveRunAsync(cancellationToken);

        // A backup left unfinished by an earlier activation (or process) is in flight again: it counts as active.
        TrackBackup();
        await ReleaseOrphanedBackupLockAsync(cancellationToken);

        // Recovery: an interrupted backup resumes from its persisted step, and a periodic reconcile keeps trying.
        this.RegisterGrainTimer(
            ct => ReconcileBackupsAsync(ct),
            new GrainTimerCreationOptions(TimeSpan.Zero, backupOptions.Value.ReconcileInterval) { KeepAlive = false });

        // A checkpoint operation cut short is recovered, and a schedule due while the grain was away runs once.
        await ActivateCheckpointsAsync(cancellationToken);

        // A test restore in flight is followed on its host (also with each reconcile): its end is recorded here.
        await CleanUpLeftoverTestAsync();
    }

    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        _deactivating = true;
        if (reason.ReasonCode is not (DeactivationReasonCode.ActivationIdle or DeactivationReasonCode.ShuttingDown or DeactivationReasonCode.ApplicationRequested or DeactivationReasonCode.Migrating))
        {
            // E.g. ApplicationError after a storage write conflict: worth seeing (the stress tests count these).
            LogUnexpectedDeactivation(logger, VmKey, reason.ReasonCode, reason.Description ?? "");
        }

        BackupGauges.Forget(this);
        if (_backupCancellation is { } cts)
        {
            await cts.CancelAsync();
            if (_backupTask is { } task)
            {
                await task.WaitAsync(cancellationToken).ContinueWith(_ => { }, TaskScheduler.Current);
            }

            cts.Dispose();
        }

        // A write still queued behind the backup task's last one is stored before the activation goes.
        await _writes.DrainAsync().WaitAsync(cancellationToken).ContinueWith(_ => { }, TaskScheduler.Current);
    }

    public Task<VmView> GetAsync(CancellationToken cancellationToken = default)
    {
        if (!state.State.Known)
        {
            // Nothing to keep in memory for a VM that does not exist.
            DeactivateOnIdle();
            throw OrchestratorException.NotFound($"VM '{this.GetPrimaryKeyString()}' is not known (no inventory of its host has seen it)");
        }

        return Task.FromResult(View());
    }

    public async Task<VmView> ApplyInventoryAsync(VmInventory inventory, CancellationToken cancellationToken = default)
    {
        _lastSync = inventory.SyncedAt;
        var s = state.State;
        var seen = inventory.Disks.Select(d => new VmDiskRecord
        {
            Target = d.Target,
            SourcePath = d.Layers[0].Path,
            Format = d.Layers[0].Format,
            ChainDepth = d.Layers.Count,
        }).ToList();
        var overlays = seen.Select(OwnOverlayOf).ToList();
        var disks = overlays.Any(o => o is not null)
            ? [.. seen.Select((d, i) => overlays[i] is { } o ? new VmDiskRecord { Target = d.Target, SourcePath = o.BasePath, Format = o.Format, ChainDepth = d.ChainDepth - 1 } : d)]
            : seen;
        _seenDisks = ReferenceEquals(disks, seen) ? null : seen;
        var changed = !s.Known
            || !s.Present
            || s.Uuid != inventory.Uuid
            || s.PowerState != inventory.PowerState
            || s.MemoryKiB != inventory.MemoryKiB
            || s.VirtualCpus != inventory.VirtualCpus
            || !s.Disks.SequenceEqual(disks)
            || !Labels.SameEntries(s.Labels, inventory.Labels);

        if (changed)
        {
            if (!s.Known)
            {
                s.FirstSeen = inventory.SyncedAt;
            }

            if (s.Known && s.Uuid != inventory.Uuid)
            {
                LogUuidChanged(logger, this.GetPrimaryKeyString(), s.Uuid, inventory.Uuid);
            }

            s.Known = true;
            s.Present = true;
            s.Uuid = inventory.Uuid;
            s.PowerState = inventory.PowerState;
            s.Disks = disks;
            s.Labels = new Dictionary<string, string>(inventory.Labels);
            s.MemoryKiB = inventory.MemoryKiB;
            s.VirtualCpus = inventory.VirtualCpus;
            s.LastChanged = inventory.SyncedAt;
            await _writes.WriteAsync(cancellationToken);

            // An overlay left in place by a run that gave up stays in the overlays gauge while the VM runs on it.
            TrackBackup();
        }

        var (host, vm) = Key;
        await Task.WhenAll(inventory.Disks.Select((d, i) =>
            GrainFactory.GetGrain<IDiskChainGrain>(GrainKeys.Disk(host, vm, d.Target)).ReconcileAsync(d, inventory.SyncedAt, overlays[i] is null ? 0 : 1, cancellationToken)));
        return View();
    }

    /// <summary>
    /// This VM's run's record of the disk when the inventory shows the disk on that run's overlay (one layer over the
    /// image the run recorded as its base), else null. The run is the active live run, or the newest finished one when
    /// it completed: its overlays were committed and deleted before it completed, so an inventory that still shows
    /// them was read before that (a sync of thousands of VMs takes seconds) and would otherwise be written now and
    /// written back by the next sync. A run that failed with its overlay left in place is not such a run.
    /// </summary>
    private Backups.BackupDiskState? OwnOverlayOf(VmDiskRecord seen)
    {
        var run = state.State.ActiveBackup is { IsTerminal: false } active ? active
            : _history?.Newest is { Step: BackupStep.Completed } newest ? newest
            : null;
        return run is { Method: BackupMethod.Live }
            && seen.ChainDepth > 1
            && run.Disks.FirstOrDefault(d => d.Target == seen.Target) is { OverlayPath.Length: > 0 } disk
            && disk.OverlayPath == seen.SourcePath
            ? disk
            : null;
    }

    public async Task<VmView?> MarkAbsentAsync(DateTimeOffset syncedAt, CancellationToken cancellationToken = default)
    {
        _lastSync = syncedAt;
        if (state.State.Known && state.State.Present)
        {
            state.State.Present = false;
            state.State.LastChanged = syncedAt;
            await _writes.WriteAsync(cancellationToken);
            LogVanished(logger, this.GetPrimaryKeyString());
        }

        return state.State.Known ? View() : null;
    }

    private VmView View()
    {
        var (host, vm) = Key;
        var s = state.State;
        var (lastBackup, lastCheckpoint) = LastProtection();
        var (proven, lastTest) = TestSummary();
        return new VmView(
            host,
            vm,
            s.Uuid,
            s.PowerState,
            [.. SeenDisks.Select(d => new DiskView(d.Target, d.SourcePath, d.Format, d.ChainDepth))],
            // A copy: state read back by MessagePack (UntrustedData) carries a comparer Orleans cannot serialize.
            new Dictionary<string, string>(s.Labels, StringComparer.Ordinal),
            s.MemoryKiB,
            s.VirtualCpus,
            _lastSync == default ? s.LastChanged : _lastSync,
            s.Present,
            s.FirstSeen,
            lastBackup,
            lastCheckpoint,
            proven,
            lastTest);
    }
}
