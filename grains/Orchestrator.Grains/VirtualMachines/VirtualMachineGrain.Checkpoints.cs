using System.Diagnostics;
using System.Text.RegularExpressions;
using Orchestrator.Grains.Checkpoints;
using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.VirtualMachines;

/// <summary>
/// Internal checkpoints: create, list, revert, delete. Each mutating operation checks first (nothing is touched
/// when it refuses), then holds the VM's persisted operation lock and the host-local fence around the hypervisor
/// call, and records the outcome in the VM's state.
/// </summary>
internal sealed partial class VirtualMachineGrain
{
    internal const string CreateKind = "checkpoint-create";
    internal const string ScheduledCreateKind = "checkpoint-scheduled-create";
    internal const string RevertKind = "checkpoint-revert";
    internal const string DeleteKind = "checkpoint-delete";
    internal const string PruneKind = "checkpoint-prune";

    /// <summary>How long to wait for a Resumed event that trails the snapshot call.</summary>
    private static readonly TimeSpan PauseEventGrace = TimeSpan.FromSeconds(2);

    public async Task<CheckpointView> CreateCheckpointAsync(string? name = null, CancellationToken cancellationToken = default)
    {
        var checkpoint = name is null ? PickManualName() : CheckpointNames.Validate(name);
        var record = await CreateCheckpointCoreAsync(checkpoint, CheckpointOrigin.Manual, cancellationToken);
        return ToView(record, sizeBytes: null);
    }

    public async Task<IReadOnlyList<CheckpointView>> ListCheckpointsAsync(CancellationToken cancellationToken = default)
    {
        RequireKnown();
        IReadOnlyList<InternalSnapshotInfo> snapshots;
        DomainInfo domain;
        try
        {
            domain = await hypervisor.GetDomainAsync(DomainName, cancellationToken);
            snapshots = await hypervisor.ListInternalSnapshotsAsync(DomainName, cancellationToken);
        }
        catch (HypervisorException e)
        {
            throw ToOrchestratorError(e, "list", null);
        }

        var sizes = await ReadVmStateSizesAsync(domain, cancellationToken);
        var names = snapshots.Select(s => s.Name).ToHashSet(StringComparer.Ordinal);

        // Checkpoints deleted behind the orchestrator's back: forget what was recorded about them.
        if (state.State.Checkpoints.RemoveAll(r => !names.Contains(r.Name)) > 0)
        {
            await _writes.WriteAsync(cancellationToken);
        }

        return [.. snapshots
            .OrderBy(s => s.CreatedAt)
            .ThenBy(s => s.Name, StringComparer.Ordinal)
            .Select(s =>
            {
                long? size = sizes is null ? null : sizes.GetValueOrDefault(s.Name);
                return FindRecord(s.Name) is { } record
                    ? ToView(record, size)
                    : new CheckpointView(s.Name, s.CreatedAt, s.HasMemory, size, null, PauseSource.Unknown, CheckpointOrigin.External, (VmPowerState)s.StateAtSnapshot, null);
            })];
    }

    public async Task<CheckpointRevertResult> RevertCheckpointAsync(string name, CheckpointRevertTarget target = CheckpointRevertTarget.Default, CancellationToken cancellationToken = default)
    {
        using var activity = StartCheckpointActivity("checkpoint.revert", name);
        activity?.SetTag("target", target.ToString());
        var started = Stopwatch.GetTimestamp();
        try
        {
            CheckpointNames.Validate(name);
            if (!Enum.IsDefined(target))
            {
                throw OrchestratorException.InvalidArgument("target", $"{(int)target} is not a revert target (default, running or paused)");
            }

            RequireKnown();
            ThrowIfBusy();
            await CheckpointPreflightAsync(requireQcow2: true, cancellationToken);
            var snapshot = await FindSnapshotAsync(name, cancellationToken)
                ?? throw UnknownCheckpoint(name);
            var revertTarget = target switch
            {
                CheckpointRevertTarget.Running => RevertTarget.Running,
                CheckpointRevertTarget.Paused => RevertTarget.Paused,
                _ => snapshot.HasMemory ? RevertTarget.Running : RevertTarget.AsSaved,
            };

            // The disks go back to the checkpoint's content behind the bitmaps' back: the next incremental is a full
            // (persisted with the lock, before the revert; a revert that then fails only costs one full).
            InvalidateIncrementalChain($"internal checkpoint revert to '{name}'");
            await BeginOperationAsync(RevertKind, name, cancellationToken);
            DomainInfo after;
            try
            {
                await FencedAsync(h => h.RevertInternalSnapshotAsync(DomainName, name, revertTarget, CancellationToken.None), cancellationToken);
                after = await hypervisor.GetDomainAsync(DomainName, CancellationToken.None);
                state.State.PowerState = (VmPowerState)after.State;
            }
            finally
            {
                await ReleaseOperationAsync(name);
            }

            var duration = Stopwatch.GetElapsedTime(started);
            activity?.SetTag("power_state", after.State.ToString());
            activity?.SetTag("duration_ms", duration.TotalMilliseconds);
            CheckpointMetrics.Duration.Record(duration.TotalMilliseconds, new TagList { { "host", Key.Host }, { "operation", "revert" } });
            LogCheckpointReverted(logger, VmKey, name, after.State, duration.TotalMilliseconds);
            return new CheckpointRevertResult(name, (VmPowerState)after.State, duration);
        }
        catch (Exception e)
        {
            throw Fail(activity, "revert", name, e);
        }
    }

    public async Task DeleteCheckpointAsync(string name, CancellationToken cancellationToken = default)
    {
        CheckpointNames.Validate(name);
        await DeleteCheckpointCoreAsync(name, DeleteKind, cancellationToken);
    }

    /// <summary>Takes a checkpoint under the VM's lock (kind says manual or scheduled) and records it.</summary>
    private async Task<CheckpointRecord> CreateCheckpointCoreAsync(string name, CheckpointOrigin origin, CancellationToken cancellationToken)
    {
        using var activity = StartCheckpointActivity("checkpoint.create", name);
        activity?.SetTag("origin", origin.ToString().ToLowerInvariant());
        var started = Stopwatch.GetTimestamp();
        try
        {
            RequireKnown();
            ThrowIfBusy();
            var domain = await CheckpointPreflightAsync(requireQcow2: true, cancellationToken);
            if (domain.State is not (DomainPowerState.Running or DomainPowerState.Paused or DomainPowerState.ShutOff))
            {
                throw OrchestratorException.FailedPrecondition(
                    "VM_STATE",
                    $"VM '{VmKey}' is {domain.State}: a checkpoint needs it running, paused or shut off");
            }

            if (await FindSnapshotAsync(name, cancellationToken) is not null)
            {
                throw new OrchestratorException(ErrorCode.AlreadyExists, $"VM '{VmKey}' already has a checkpoint named '{name}'; pick another name or delete that one first", field: "name");
            }

            await BeginOperationAsync(origin == CheckpointOrigin.Schedule ? ScheduledCreateKind : CreateKind, name, cancellationToken);
            CheckpointRecord record;
            try
            {
                var running = domain.State == DomainPowerState.Running;
                using var meter = new PauseMeter(hypervisor, DomainName);
                var callStarted = Stopwatch.GetTimestamp();

                // No cancellation once under way: the snapshot either exists afterwards and is recorded, or not.
                var info = await FencedAsync(h => h.CreateInternalSnapshotAsync(DomainName, name, $"orchestrator {origin.ToString().ToLowerInvariant()} checkpoint", CancellationToken.None), cancellationToken);
                var callDuration = Stopwatch.GetElapsedTime(callStarted);
                TimeSpan? pause = null;
                var source = PauseSource.None;
                if (running)
                {
                    (var measured, source) = await meter.MeasureAsync(callDuration, PauseEventGrace, CancellationToken.None);
                    pause = measured;
                }

                record = new CheckpointRecord
                {
                    Name = info.Name,
                    CreatedAt = info.CreatedAt,
                    WithMemory = info.HasMemory,
                    Origin = origin,
                    Pause = pause,
                    PauseSource = source,
                    StateAtCheckpoint = (VmPowerState)domain.State,
                    Duration = callDuration,
                };
                state.State.Checkpoints.RemoveAll(c => c.Name == name);
                state.State.Checkpoints.Add(record);
            }
            finally
            {
                await ReleaseOperationAsync(name);
            }

            var tags = new TagList { { "host", Key.Host }, { "vm", Key.Vm }, { "origin", origin.ToString().ToLowerInvariant() }, { "with_memory", record.WithMemory } };
            CheckpointMetrics.Taken.Add(1, tags);
            if (record.Pause is { } p)
            {
                CheckpointMetrics.Pause.Record(p.TotalMilliseconds, new TagList { { "host", Key.Host }, { "source", PauseSourceName(record.PauseSource) } });
                activity?.SetTag("pause_ms", p.TotalMilliseconds);
            }

            var total = Stopwatch.GetElapsedTime(started);
            CheckpointMetrics.Duration.Record(total.TotalMilliseconds, new TagList { { "host", Key.Host }, { "operation", "create" } });
            activity?.SetTag("pause_source", PauseSourceName(record.PauseSource));
            activity?.SetTag("with_memory", record.WithMemory);
            activity?.SetTag("duration_ms", total.TotalMilliseconds);
            LogCheckpointCreated(logger, VmKey, name, record.WithMemory, record.Pause?.TotalMilliseconds ?? 0, record.PauseSource, total.TotalMilliseconds);
            await ReportProtectionAsync(PolicyKind.Checkpoint, record.CreatedAt);
            return record;
        }
        catch (Exception e)
        {
            throw Fail(activity, "create", name, e);
        }
    }

    private async Task DeleteCheckpointCoreAsync(string name, string kind, CancellationToken cancellationToken)
    {
        using var activity = StartCheckpointActivity(kind == PruneKind ? "checkpoint.prune" : "checkpoint.delete", name);
        var started = Stopwatch.GetTimestamp();
        var operation = kind == PruneKind ? "prune" : "delete";
        try
        {
            RequireKnown();
            ThrowIfBusy();

            // A raw disk cannot hold a checkpoint, but one attached later must not keep old checkpoints undeletable.
            await CheckpointPreflightAsync(requireQcow2: false, cancellationToken);
            if (await FindSnapshotAsync(name, cancellationToken) is null)
            {
                throw UnknownCheckpoint(name);
            }

            await BeginOperationAsync(kind, name, cancellationToken);
            try
            {
                await FencedAsync(h => h.DeleteInternalSnapshotAsync(DomainName, name, CancellationToken.None), cancellationToken);
                state.State.Checkpoints.RemoveAll(c => c.Name == name);
            }
            finally
            {
                await ReleaseOperationAsync(name);
            }

            var duration = Stopwatch.GetElapsedTime(started);
            activity?.SetTag("duration_ms", duration.TotalMilliseconds);
            CheckpointMetrics.Duration.Record(duration.TotalMilliseconds, new TagList { { "host", Key.Host }, { "operation", operation } });
            LogCheckpointDeleted(logger, VmKey, name, operation, duration.TotalMilliseconds);
        }
        catch (Exception e)
        {
            throw Fail(activity, operation, name, e);
        }
    }

    /// <summary>
    /// Read-only checks against the live domain, before anything is touched: no disk on a backing chain (an active
    /// backup overlay, or any external overlay), and (when asked) every disk qcow2.
    /// </summary>
    private async Task<DomainInfo> CheckpointPreflightAsync(bool requireQcow2, CancellationToken cancellationToken)
    {
        DomainInfo domain;
        try
        {
            domain = await hypervisor.GetDomainAsync(DomainName, cancellationToken);
        }
        catch (HypervisorException e)
        {
            throw ToOrchestratorError(e, "preflight", null);
        }

        foreach (var disk in domain.Disks.Where(d => d.ChainDepth > 1))
        {
            var below = disk.BackingChain[0].Path;
            if (BackupOverlayPattern().IsMatch(Path.GetFileName(disk.SourcePath)))
            {
                throw OrchestratorException.FailedPrecondition(
                    "BACKUP_OVERLAY_ACTIVE",
                    $"VM '{VmKey}' has an active backup overlay: disk {disk.Target} runs on {disk.SourcePath} over {below}. "
                    + "An internal checkpoint now would land in the overlay and break the backup's commit (libvirt does not stop it); "
                    + "wait until the backup has committed the overlay, then retry");
            }

            throw OrchestratorException.FailedPrecondition(
                "EXTERNAL_OVERLAY_ACTIVE",
                $"VM '{VmKey}' has a disk on a backing chain: disk {disk.Target} runs on {disk.SourcePath} over {below} (an external overlay). "
                + "An internal checkpoint would land in the top image only; commit the chain first (block commit with pivot), or use a live backup");
        }

        if (requireQcow2 && domain.Disks.FirstOrDefault(d => d.Format != "qcow2") is { } raw)
        {
            throw OrchestratorException.FailedPrecondition(
                "RAW_DISK",
                $"VM '{VmKey}' cannot take internal checkpoints: disk {raw.Target} ({raw.SourcePath}) is {raw.Format}. "
                + "Internal checkpoints need qcow2; use a live backup, or convert the disk (qemu-img convert -O qcow2 while the VM is shut off)");
        }

        return domain;
    }

    private async Task<InternalSnapshotInfo?> FindSnapshotAsync(string name, CancellationToken cancellationToken)
    {
        try
        {
            return (await hypervisor.ListInternalSnapshotsAsync(DomainName, cancellationToken)).FirstOrDefault(s => s.Name == name);
        }
        catch (HypervisorException e)
        {
            throw ToOrchestratorError(e, "list", null);
        }
    }

    /// <summary>Bytes of saved memory per checkpoint, summed over every image of every disk; null when unreadable.</summary>
    private async Task<Dictionary<string, long>?> ReadVmStateSizesAsync(DomainInfo domain, CancellationToken cancellationToken)
    {
        var sizes = new Dictionary<string, long>(StringComparer.Ordinal);
        try
        {
            foreach (var layer in domain.Disks.SelectMany(d => d.BackingChain.Prepend(new DiskLayer(d.SourcePath, d.Format))))
            {
                // The format from the domain XML: a raw image is never parsed (its bytes are the guest's).
                foreach (var snapshot in await hypervisor.Images.ListSnapshotsAsync(layer.Path, layer.Format, cancellationToken))
                {
                    sizes[snapshot.Name] = sizes.GetValueOrDefault(snapshot.Name) + snapshot.VmStateSize;
                }
            }
        }
        catch (HypervisorException e)
        {
            LogSizesUnreadable(logger, VmKey, e.Message);
            return null;
        }

        return sizes;
    }

    /// <summary>Releases the lock (if this operation holds it) and writes the state, whatever happened: the outcome must be recorded.</summary>
    private async Task ReleaseOperationAsync(string id)
    {
        if (state.State.Operation?.Id == id)
        {
            state.State.Operation = null;
        }

        await _writes.WriteAsync(CancellationToken.None);
    }

    /// <summary>cp-yyyyMMdd-HHmmss, or with -2, -3... after it when a checkpoint of this VM has that name (two in one second).</summary>
    private string PickManualName()
    {
        var picked = CheckpointNames.ForTime(CheckpointNames.ManualPrefix, time.GetUtcNow());
        var candidate = picked;
        for (var n = 2; FindRecord(candidate) is not null; n++)
        {
            candidate = $"{picked}-{n}";
        }

        return candidate;
    }

    private CheckpointRecord? FindRecord(string name) => state.State.Checkpoints.FirstOrDefault(c => c.Name == name);

    private OrchestratorException UnknownCheckpoint(string name) =>
        new(ErrorCode.NotFound, $"VM '{VmKey}' has no checkpoint named '{name}' ('checkpoint list {VmKey}' shows its checkpoints)", field: "name", reason: "CHECKPOINT_NOT_FOUND");

    private static CheckpointView ToView(CheckpointRecord r, long? sizeBytes) =>
        new(r.Name, r.CreatedAt, r.WithMemory, sizeBytes, r.Pause, r.PauseSource, r.Origin, r.StateAtCheckpoint, r.Duration);

    private Activity? StartCheckpointActivity(string operation, string name)
    {
        var activity = Telemetry.Source.StartActivity(operation);
        activity?.SetTag("host", Key.Host);
        activity?.SetTag("vm", Key.Vm);
        activity?.SetTag("checkpoint", name);
        return activity;
    }

    /// <summary>Records a failed or refused operation (span, metric, log) and returns the error to throw.</summary>
    private OrchestratorException Fail(Activity? activity, string operation, string name, Exception e)
    {
        var error = e switch
        {
            OrchestratorException o => o,
            HypervisorException h => ToOrchestratorError(h, operation, name),
            OperationCanceledException => new OrchestratorException(ErrorCode.Internal, $"checkpoint {operation} of VM '{VmKey}' was cancelled", reason: "CANCELLED"),
            _ => new OrchestratorException(ErrorCode.Internal, $"checkpoint {operation} of VM '{VmKey}' failed: {e.Message}", reason: "INTERNAL"),
        };
        var reason = error.Reason ?? error.Code.ToString();
        activity?.SetStatus(ActivityStatusCode.Error, error.Message);
        activity?.SetTag("error.reason", reason);
        CheckpointMetrics.RecordFailure(Key.Host, Key.Vm, operation, reason);
        LogCheckpointFailed(logger, VmKey, operation, name, reason, error.Message);
        return error;
    }

    private OrchestratorException ToOrchestratorError(HypervisorException e, string operation, string? name) => e.Kind switch
    {
        HypervisorErrorKind.DomainNotFound => new(ErrorCode.NotFound, $"VM '{VmKey}' is not on its host any more (libvirt has no domain '{DomainName}')", reason: "VM_NOT_PRESENT"),
        HypervisorErrorKind.SnapshotNotFound => UnknownCheckpoint(name ?? "?"),
        HypervisorErrorKind.SnapshotExists => new(ErrorCode.AlreadyExists, $"VM '{VmKey}' already has a checkpoint named '{name}'", field: "name"),
        HypervisorErrorKind.UnsupportedDiskFormat => OrchestratorException.FailedPrecondition("RAW_DISK", e.Message),
        HypervisorErrorKind.InvalidDomainState => OrchestratorException.FailedPrecondition("VM_STATE", $"checkpoint {operation} of VM '{VmKey}': {e.Message}"),
        HypervisorErrorKind.BlockJobActive => OrchestratorException.FailedPrecondition("BLOCK_JOB_ACTIVE", $"checkpoint {operation} of VM '{VmKey}': {e.Message}"),
        _ => new(ErrorCode.Internal, $"checkpoint {operation} of VM '{VmKey}' failed in the hypervisor: {e.Message}", reason: "HYPERVISOR_" + e.Kind.ToString().ToUpperInvariant()),
    };

    private static string PauseSourceName(PauseSource source) => source switch
    {
        PauseSource.Events => "events",
        PauseSource.CallDuration => "call_duration",
        PauseSource.None => "none",
        _ => "unknown",
    };

    /// <summary>True for a path named as our live-backup overlays are.</summary>
    private static bool IsBackupOverlay(string path) => BackupOverlayPattern().IsMatch(Path.GetFileName(path));

    /// <summary>The live-backup overlay naming: &lt;disk&gt;.orch-&lt;runId&gt;.qcow2.</summary>
    [GeneratedRegex(@"\.orch-[^/]+\.qcow2$")]
    private static partial Regex BackupOverlayPattern();
}
