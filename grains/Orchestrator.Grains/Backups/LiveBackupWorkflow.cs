using System.Diagnostics;
using System.Runtime.ExceptionServices;
using Microsoft.Extensions.Logging;
using Orchestrator.Grains.VirtualMachines;
using Orchestrator.Grains.Workflows;
using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.Backups;

/// <summary>What the live-backup workflow needs from the grain that owns its run: the run's persisted records.</summary>
internal interface IBackupRunRecords
{
    /// <summary>Records a step in memory; the next persisted write of the run stores it.</summary>
    void Add(BackupStep step, string? note);

    /// <summary>Moves the run to <paramref name="step"/> and persists it (the intent of that step's side effects).</summary>
    Task PersistAsync(BackupStep step, string? note, CancellationToken cancellationToken);

    /// <summary>Persists the run as it is now (e.g. a failed attempt counted).</summary>
    Task PersistAsync(CancellationToken cancellationToken);

    /// <summary>A change watchers see at once and recovery does not need (copy progress, a disk committed).</summary>
    Task NoteLiveChangeAsync(CancellationToken cancellationToken);

    /// <summary>The VM's disks changed (a disk committed): the overlay gauges follow.</summary>
    void DisksChanged();

    /// <summary>Ends the run: recorded in the history (older sets pruned by the run's retention when it completed), lock released.</summary>
    Task FinishAsync(BackupStep outcome, CancellationToken cancellationToken);
}

/// <summary>Who and where: the services a workflow of one VM uses.</summary>
internal sealed record LiveBackupContext(IHypervisor Hypervisor, HostVmLocks Fence, BackupOptions Options, TimeProvider Time, ILogger Logger, string Host, string Vm, string VmKey)
{
    /// <summary>The libvirt domain is named as the VM.</summary>
    public string DomainName => Vm;

    public DiskOverlays Overlays => new(Hypervisor, Fence, Options, Time, Logger, VmKey, DomainName);
}

/// <summary>
/// The live backup of one running VM, all its disks together, as its steps read top to bottom: preflight (at
/// admission), overlays, copy, commit and pivot, clean, verify, manifest, finish with retention. Each step says where
/// it is called how it is retried, how long it may take and what undoes it. The run is persisted before each side
/// effect and after it (through <see cref="IBackupRunRecords"/>, which the grain implements), and every step first
/// reads the real chain, so running this again from any persisted step (after a crash) finishes or rolls back.
/// </summary>
internal sealed partial class LiveBackupWorkflow : IStepObserver
{
    // Step names: trace spans (backup.<name>), step records, crash-test points.
    public const string Preflight = "preflight";
    public const string Overlay = "overlay";
    public const string Copy = "copy";
    public const string Commit = "commit";
    public const string Clean = "clean";
    public const string Verify = "verify";
    public const string Manifest = "manifest";
    public const string Finish = "finish";

    /// <summary>Heartbeat points inside long steps.</summary>
    public const string DiskCopied = "disk copied";
    public const string CommitReady = "commit ready";

    private const string CommitBack = "commit the overlays back";
    private const string DeleteSet = "delete the backup set";

    private readonly LiveBackupContext _context;
    private readonly BackupRunState _run;
    private readonly IBackupRunRecords _records;
    private readonly StepRunner _steps;
    private readonly DiskOverlays _overlays;

    /// <summary>
    /// Each copy's read-back, begun once every copy is on disk (fsynced), so it runs beside the commit and the clean-up
    /// instead of after them; the verify step waits for it and checks it. Memory only: a run resumed after a crash
    /// reads every copy back in its verify step.
    /// </summary>
    private readonly Dictionary<string, Task<ReadBack>> _readBacks = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _readBackStop = new();
    private PauseTotals? _pauses;

    public LiveBackupWorkflow(LiveBackupContext context, BackupRunState run, IBackupRunRecords records, IReadOnlyList<IStepObserver> observers)
    {
        _context = context;
        _run = run;
        _records = records;
        _overlays = context.Overlays;
        _steps = new StepRunner("backup", Telemetry.Source, context.Time, [this, .. observers], Tag);
    }

    public IReadOnlyList<StepRecord> Steps => _steps.Records;

    private IHypervisor Hypervisor => _context.Hypervisor;

    private string DomainName => _context.DomainName;

    /// <summary>
    /// Commit and clean-up: retried with backoff, the attempts persisted in the run (one budget for both steps, kept
    /// across restarts). Past it the run gives up rather than loop, naming any overlay left in place.
    /// </summary>
    private Retry FinishRetry => Retry.Bounded(
        maxAttempts: _context.Options.FinishAttempts,
        initialInterval: _context.Options.FinishRetryDelay,
        maximumInterval: TimeSpan.FromMinutes(1),
        budget: _context.Options.FinishRetryBudget,
        ledger: new RunRetryLedger(_run, _records));

    /// <summary>
    /// Admission: refuses, before touching the VM, anything that would make the backup unsafe or doomed, and makes
    /// the set's directory. Returns the run to persist. The grain holds the VM's operation lock around it.
    /// </summary>
    public static async Task<BackupRunState> PreflightAsync(
        LiveBackupContext context,
        IReadOnlyList<IStepObserver> observers,
        string runId,
        string target,
        BackupRequest request,
        DateTimeOffset now,
        IReadOnlyList<VmDiskRecord> inventory,
        CancellationToken cancellationToken)
    {
        var steps = new StepRunner("backup", Telemetry.Source, context.Time, observers);
        BackupRunState? run = null;
        try
        {
            // Only reads and a write probe in the new set: nothing to undo but the set, which it deletes itself.
            await steps.RunAsync(Preflight, Retry.None, timeout: null, async ct => run = await CheckAsync(context, runId, target, request, now, inventory, ct), cancellationToken);
        }
        catch (StepFailedException e) when (e.InnerException is not null)
        {
            // The caller hears the refusal itself (its code and field), not the step's wrapper.
            ExceptionDispatchInfo.Capture(e.InnerException).Throw();
        }

        return run!;
    }

    /// <summary>Drives the persisted run from its current step to Completed or Failed.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        using var pauses = _pauses = new PauseTotals(Hypervisor, DomainName);
        try
        {
            await RunStepsAsync(cancellationToken);
        }
        catch (StepFailedException failure)
        {
            // Read-backs still running are of copies about to be deleted: stopped first.
            await StopReadBacksAsync();

            // Undo newest first (commit the overlays back, delete the set); a compensation that ends the run stops it.
            await _steps.CompensateAsync(failure, () => _run.IsTerminal, cancellationToken);
            if (!_run.IsTerminal)
            {
                await _records.FinishAsync(BackupStep.Failed, cancellationToken);
            }
        }
        finally
        {
            await StopReadBacksAsync();
            _readBackStop.Dispose();
        }
    }

    /// <summary>Cancels the read-backs nobody will wait for and lets them end (their files may be deleted next).</summary>
    private async Task StopReadBacksAsync()
    {
        if (_readBacks.Count == 0)
        {
            return;
        }

        await _readBackStop.CancelAsync();
        foreach (var readBack in _readBacks.Values)
        {
            await readBack.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Current);
        }

        _readBacks.Clear();
    }

    private async Task RunStepsAsync(CancellationToken cancellationToken)
    {
        await CatchUpOlderStepsAsync(cancellationToken);

        // Preflight made the set's directory: a run that fails leaves no partial set.
        _steps.Compensate(new(DeleteSet, DeleteSetAsync));

        // 1. Overlays on every disk at once, the guest frozen around them when asked; it never pauses. Not retried: a
        //    second snapshot would stack overlays. From here on a failure commits the overlays back.
        await _steps.RunAsync(
            Overlay,
            Retry.None,
            timeout: null, // the snapshot is never cut off half way; the driver bounds the call, the freeze budget the freeze
            CreateOverlaysAsync,
            cancellationToken,
            compensate: new(CommitBack, CommitBackAsync),
            passed: Passed(BackupStep.Quiesce));

        if (_run.RollingBack)
        {
            // The process stopped while committing back: go on with it (the compensations above are registered again).
            throw new StepFailedException(_run.Step.ToString(), 0, TimeSpan.Zero, new InvalidOperationException(_run.Error ?? "rolling back"));
        }

        // 2. Copy the frozen bases, all disks side by side. Not retried here: a failed copy commits back; a copy cut
        //    off by a crash starts again from zero (the bases are immutable under the overlays).
        await _steps.RunAsync(Copy, Retry.None, timeout: null /* as long as the data takes; progress is reported */, CopyDisksAsync, cancellationToken, passed: Passed(BackupStep.Copying));

        // 3. Commit each overlay into exactly its base, pivot, confirm in the definition. 4. Delete the overlays.
        await CommitAndCleanAsync(cancellationToken);
        _steps.Discharge(CommitBack); // the VM runs on its own images again

        // 5. Read every copy back (digest, qemu-img check). 6. The manifest beside the images.
        await _steps.RunAsync(Verify, Retry.None, timeout: null /* reads every copy once */, VerifyDisksAsync, cancellationToken);
        await _steps.RunAsync(Manifest, Retry.None, timeout: TimeSpan.FromMinutes(2), WriteManifestAsync, cancellationToken);

        // 7. Into the history; the run's retention prunes older sets of its policy.
        await _steps.RunAsync(Finish, Retry.None, timeout: null, ct => _records.FinishAsync(BackupStep.Completed, ct), cancellationToken);
    }

    /// <summary>Steps 3 and 4, on the way forward and when committing back.</summary>
    private async Task CommitAndCleanAsync(CancellationToken cancellationToken)
    {
        await _steps.RunAsync(Commit, FinishRetry, timeout: null /* each READY wait is bounded (30 min) */, CommitDisksAsync, cancellationToken, passed: Passed(BackupStep.Committing));
        await _steps.RunAsync(Clean, FinishRetry, timeout: TimeSpan.FromMinutes(5), CleanOverlaysAsync, cancellationToken, passed: Passed(BackupStep.Cleaning));
    }

    /// <summary>Whether the persisted run is already past <paramref name="step"/> (resumed after a restart).</summary>
    private bool Passed(BackupStep step) => _run.Step > step;

    /// <summary>Runs persisted by earlier versions, or before the overlays' intent, moved to a step this workflow runs.</summary>
    private async Task CatchUpOlderStepsAsync(CancellationToken cancellationToken)
    {
        if (_run.Step is BackupStep.Admitted or BackupStep.Preflight or BackupStep.Queued)
        {
            // Stopped before the intent to create overlays was persisted: nothing was touched.
            await _records.PersistAsync(BackupStep.Quiesce, "resumed after restart", cancellationToken);
        }

        if (_run.Step is BackupStep.OverlayActive)
        {
            // Persisted only by earlier versions, which wrote this step apart from the next.
            await _records.PersistAsync(_run.RollingBack ? BackupStep.Committing : BackupStep.Copying, null, cancellationToken);
        }
    }

    // ---- Compensations -------------------------------------------------------------------------------------------

    /// <summary>
    /// Puts the VM back on its bases: commits and cleans up (the same steps as the way forward), persisted as rolling
    /// back first. Overlay creation that failed with no overlay active (the snapshot is atomic) only deletes stray
    /// overlay files. When committing or cleaning is itself what failed past its budget, the run gives up instead.
    /// </summary>
    private async Task CommitBackAsync(StepFailedException failure, CancellationToken cancellationToken)
    {
        if (failure.Step is Commit or Clean)
        {
            await GiveUpAsync(failure, cancellationToken);
            return;
        }

        if (!_run.RollingBack)
        {
            if (failure.Step == Overlay && !await AnyOverlayActiveAsync(cancellationToken))
            {
                await DeleteStrayOverlaysAsync(cancellationToken);
                return;
            }

            _run.RollingBack = true;
            await _records.PersistAsync(
                BackupStep.Committing,
                failure.Step == Overlay ? "overlay creation failed after the overlays appeared: committing back" : "copy failed: committing the overlays back",
                cancellationToken);
        }

        try
        {
            await CommitAndCleanAsync(cancellationToken);
        }
        catch (StepFailedException again)
        {
            await GiveUpAsync(again, cancellationToken);
        }
    }

    private Task DeleteSetAsync(StepFailedException failure, CancellationToken cancellationToken)
    {
        new BackupSet(_run.BackupSetPath, _context.Options).Delete(_context.Logger, _context.VmKey);
        return Task.CompletedTask;
    }

    /// <summary>
    /// The commit or clean-up retry budget is spent: end the run Failed rather than loop. A block job of ours still
    /// running is aborted (the VM stays on the overlay, a valid chain over its untouched base); an overlay the VM
    /// still runs on stays where it is and is named in the error (fleet overlays and overlays.alive report it).
    /// </summary>
    private async Task GiveUpAsync(StepFailedException failure, CancellationToken cancellationToken)
    {
        var step = _run.Step;
        var onOverlays = new List<string>();
        try
        {
            var domain = await Hypervisor.GetDomainAsync(DomainName, cancellationToken);
            foreach (var disk in _run.Disks)
            {
                if (domain.Disks.FirstOrDefault(d => d.Target == disk.Target) is { } live && live.SourcePath == disk.OverlayPath)
                {
                    onOverlays.Add($"{disk.Target} on {disk.OverlayPath}");
                    try
                    {
                        if (await Hypervisor.GetBlockJobAsync(DomainName, disk.Target, cancellationToken) is not null)
                        {
                            using var _ = await _context.Fence.AcquireAsync(_context.VmKey, cancellationToken);
                            await Hypervisor.AbortBlockJobAsync(DomainName, disk.Target, cancellationToken);
                        }
                    }
                    catch (HypervisorException e)
                    {
                        LogGiveUpAbortFailed(_context.Logger, _context.VmKey, _run.RunId, disk.Target, e.Message);
                    }
                }
            }
        }
        catch (HypervisorException e)
        {
            onOverlays.Add($"unknown ({e.Message})");
        }

        var where = onOverlays.Count == 0
            ? "the VM runs on its own images again"
            : $"the VM still runs on overlays left in place: {string.Join(", ", onOverlays)} (see: orchestrator fleet overlays)";
        var options = _context.Options;
        _run.Error = $"{step} gave up after {_run.FinishAttempts} tries over {failure.FailingFor.TotalSeconds:F0} s (budget: "
            + $"{options.FinishAttempts} tries, {options.FinishRetryBudget.TotalSeconds:F0} s): {_run.Error}; {where}";
        LogBackupGaveUp(_context.Logger, _context.VmKey, _run.RunId, step, _run.FinishAttempts, where);
        await DeleteSetAsync(failure, cancellationToken);
        await _records.FinishAsync(BackupStep.Failed, cancellationToken);
    }

    // ---- Preflight -----------------------------------------------------------------------------------------------

    private static async Task<BackupRunState> CheckAsync(
        LiveBackupContext context,
        string runId,
        string target,
        BackupRequest request,
        DateTimeOffset now,
        IReadOnlyList<VmDiskRecord> inventory,
        CancellationToken cancellationToken)
    {
        var hypervisor = context.Hypervisor;
        var vmKey = context.VmKey;
        var domain = await hypervisor.GetDomainAsync(context.DomainName, cancellationToken);
        if (!CanRunLive(domain.State))
        {
            throw new OrchestratorException(
                ErrorCode.FailedPrecondition,
                $"VM '{vmKey}' is {domain.State}: a live backup needs a running or paused VM; for a shut-off VM, an offline copy of its disks is safe instead");
        }

        if (domain.Disks.Count == 0)
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"VM '{vmKey}' has no file-backed disks to back up");
        }

        foreach (var disk in domain.Disks)
        {
            if (Path.GetFileName(disk.SourcePath).Contains(".orch-", StringComparison.Ordinal))
            {
                throw new OrchestratorException(ErrorCode.FailedPrecondition, $"disk '{disk.Target}' of '{vmKey}' runs on a leftover backup overlay ({disk.SourcePath}); the reconcile must commit it first");
            }

            if (!disk.ChainDescribed)
            {
                throw new OrchestratorException(ErrorCode.FailedPrecondition, $"disk '{disk.Target}' of '{vmKey}' has a backing image that is not a file, or whose format neither the domain XML nor the image header records; it cannot be backed up without guessing");
            }

            var known = inventory.FirstOrDefault(d => d.Target == disk.Target)
                ?? throw new OrchestratorException(ErrorCode.FailedPrecondition, $"disk '{disk.Target}' of '{vmKey}' is not in the inventory yet; try again after the next sync");

            // A sync that ran while an earlier backup held its overlay recorded one layer more than the VM's own chain
            // (the VM running on a leftover overlay now is refused above, by its name).
            var expected = known.ChainDepth - (known.ChainDepth > 1 && DiskOverlays.IsBackupOverlay(known.SourcePath) ? 1 : 0);
            if (expected != disk.ChainDepth)
            {
                throw new OrchestratorException(ErrorCode.FailedPrecondition, $"disk '{disk.Target}' of '{vmKey}' has a chain of {disk.ChainDepth} images, expected {expected}: a foreign overlay?");
            }

            if (await hypervisor.GetBlockJobAsync(context.DomainName, disk.Target, cancellationToken) is { } job)
            {
                throw new OrchestratorException(ErrorCode.FailedPrecondition, $"disk '{disk.Target}' of '{vmKey}' already has a {job.Kind} block job running");
            }
        }

        var set = BackupSet.For(target, context.Vm, runId, context.Options);
        long needed = 0;
        var disks = new List<BackupDiskState>();

        // Every disk's images looked at side by side (one qemu-img process each, all bounded by the driver).
        var sizes = await Task.WhenAll(domain.Disks.Select(async disk =>
        {
            // Formats from the domain XML: qemu-img opens each image as what libvirt runs it as, never probed.
            var info = await hypervisor.Images.InfoAsync(disk.SourcePath, disk.Format, cancellationToken);
            var layers = await Task.WhenAll(disk.BackingChain.Select(layer => hypervisor.Images.InfoAsync(layer.Path, layer.Format, cancellationToken)));
            return (Info: info, ChainBytes: layers.Sum(l => l.ActualSize));
        }));
        for (var i = 0; i < domain.Disks.Count; i++)
        {
            var disk = domain.Disks[i];
            var (info, chainBytes) = sizes[i];
            needed += info.ActualSize + chainBytes;
            disks.Add(new BackupDiskState
            {
                Target = disk.Target,
                BasePath = disk.SourcePath,
                Format = disk.Format,
                BackingChain = [.. disk.BackingChain.Select(l => new Disks.ChainLayerRecord { Path = l.Path, Format = l.Format })],
                OverlayPath = DiskOverlays.OverlayPathFor(disk.SourcePath, runId),
                BackupPath = set.ImagePath(disk.Target, disk.BackingChain.Count > 0 ? "qcow2" : disk.Format),
                BytesTotal = info.ActualSize + chainBytes,
                VirtualSize = info.VirtualSize,
            });
        }

        try
        {
            // Every directory below the root created private and never through a symbolic link (a planted
            // <target>/<vm> link out of the roots is refused), the probe likewise.
            set.CreateDirectory();
            await set.ProbeWritableAsync(runId, cancellationToken);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or HypervisorException)
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"target '{target}' is not writable: {e.Message}", field: "target");
        }

        var free = await hypervisor.Images.FreeSpaceAsync(set.Path, cancellationToken);
        if (free < needed)
        {
            set.Delete(context.Logger, vmKey);
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"target '{target}' has {free} bytes free; the disks need {needed} bytes", field: "target");
        }

        var checkedAt = context.Time.GetUtcNow();
        return new BackupRunState
        {
            RunId = runId,
            StartedAt = now,
            BackupSetPath = set.Path,
            Disks = disks,
            Quiesce = request.Quiesce,
            Verify = request.Verify,
            BandwidthBytesPerSecond = request.BandwidthBytesPerSecond,
            FreezeBudgetMilliseconds = request.FreezeBudget.TotalMilliseconds,
            Retention = request.Retention is { } r ? [r.KeepLast, r.KeepDaily, r.KeepWeekly, r.KeepMonthly] : null,
            Policy = request.Policy,
            PolicyVersion = request.PolicyVersion,
            PolicyRun = request.PolicyRun,
            DomainXml = await hypervisor.GetDomainXmlAsync(context.DomainName, inactive: true, cancellationToken),
            VmUuid = domain.Uuid,
            Steps =
            [
                new BackupStepEntry { Step = BackupStep.Admitted, At = now },
                new BackupStepEntry { Step = BackupStep.Preflight, At = checkedAt, Note = $"{disks.Count} disks, {needed} bytes allocated, {free} bytes free on target" },
            ],
        };
    }

    // ---- 1. Overlays ---------------------------------------------------------------------------------------------

    /// <summary>Optional freeze, then overlays on every disk at once; the guest never pauses.</summary>
    private async Task CreateOverlaysAsync(CancellationToken cancellationToken)
    {
        await CreateOverlaysOnceAsync(cancellationToken);

        // Not persisted: the overlays' names follow from the run id (persisted at Quiesce), and a run resumed at
        // Quiesce finds them active and goes on to copy (copying replaces any partial copy).
        _records.Add(BackupStep.OverlayActive, null);
        _records.Add(BackupStep.Copying, null);
        await _records.NoteLiveChangeAsync(cancellationToken);
    }

    private async Task CreateOverlaysOnceAsync(CancellationToken cancellationToken)
    {
        var run = _run;
        var domain = await Hypervisor.GetDomainAsync(DomainName, cancellationToken);
        if (run.Disks.All(d => domain.Disks.FirstOrDefault(x => x.Target == d.Target)?.SourcePath == d.OverlayPath))
        {
            return; // a crash after the snapshot but before its result was persisted
        }

        if (!CanRunLive(domain.State))
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"VM '{_context.VmKey}' is {domain.State}; no overlays were created");
        }

        run.OverlayAttempts++;
        await DeleteStrayOverlaysAsync(domain, cancellationToken);
        var frozen = await FreezeAsync(domain.State == DomainPowerState.Paused, cancellationToken);
        var freezeStart = Stopwatch.GetTimestamp();
        var thawed = false;
        try
        {
            using var call = Telemetry.Source.StartActivity("libvirt.snapshot-create-external");
            call?.SetTag("disks", run.Disks.Count);

            // The snapshot is never cancelled half way (libvirt's call cannot be, and an overlay that appears after we
            // gave up would be one nobody tracks): its outcome is always awaited, bounded by the driver's call time.
            // The freeze budget bounds the guest's freeze instead: past it the guest is thawed while the snapshot
            // finishes, and the backup is crash-consistent (refused after the fact when quiesce is required).
            var snapshot = CreateSnapshotFencedAsync(cancellationToken);
            if (frozen)
            {
                var budget = TimeSpan.FromMilliseconds(run.FreezeBudgetMilliseconds);
                using var budgetTimer = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                if (await Task.WhenAny(snapshot, Task.Delay(budget, _context.Time, budgetTimer.Token)) != snapshot)
                {
                    await ThawAsync(freezeStart);
                    thawed = true;
                    run.QuiesceOutcome = $"{run.QuiesceOutcome}; thawed at the freeze budget ({budget.TotalMilliseconds:F0} ms) before the overlays were in place: crash-consistent";
                    LogFreezeBudgetExceeded(_context.Logger, _context.VmKey, budget.TotalMilliseconds);
                }

                await budgetTimer.CancelAsync();
            }

            await snapshot;
            if (thawed && run.Quiesce == QuiesceMode.Required)
            {
                throw new OrchestratorException(
                    ErrorCode.FailedPrecondition,
                    $"quiesce is required but the overlays took longer than the freeze budget ({run.FreezeBudgetMilliseconds:F0} ms); the guest was thawed first, so the image would only be crash-consistent");
            }
        }
        finally
        {
            if (frozen && !thawed)
            {
                // Thaw always runs, whatever happened to the snapshot.
                await ThawAsync(freezeStart);
            }
        }
    }

    private async Task CreateSnapshotFencedAsync(CancellationToken cancellationToken)
    {
        using var _ = await _context.Fence.AcquireAsync(_context.VmKey, cancellationToken);
        await Hypervisor.CreateExternalSnapshotAsync(DomainName, [.. _run.Disks.Select(d => new OverlaySpec(d.Target, d.OverlayPath))], cancellationToken);
    }

    private async Task<bool> FreezeAsync(bool paused, CancellationToken cancellationToken)
    {
        var run = _run;
        if (run.Quiesce == QuiesceMode.Off)
        {
            run.QuiesceOutcome = paused ? "off; the VM is paused" : "off";
            return false;
        }

        if (paused)
        {
            // A paused guest's agent cannot answer (its vCPUs are stopped); its disks do not change while it is paused,
            // but what it had not written yet is not on them: crash-consistent, as at a power cut at the pause.
            const string Why = "the VM is paused: its guest agent cannot freeze while its vCPUs are stopped";
            if (run.Quiesce == QuiesceMode.Required)
            {
                run.QuiesceOutcome = $"not frozen: {Why}";
                throw new OrchestratorException(ErrorCode.FailedPrecondition, $"quiesce is required but {Why}; resume it or back it up with quiesce off or try");
            }

            run.QuiesceOutcome = $"not frozen, crash-consistent: {Why}";
            return false;
        }

        try
        {
            using var call = Telemetry.Source.StartActivity("libvirt.fsfreeze");
            var count = await Hypervisor.FreezeFileSystemsAsync(DomainName, cancellationToken);
            run.QuiesceOutcome = $"frozen ({count} file systems)";
            return true;
        }
        catch (HypervisorException e) when (run.Quiesce == QuiesceMode.Try)
        {
            run.QuiesceOutcome = $"not frozen, crash-consistent: {e.Message}";
            return false;
        }
        catch (HypervisorException e)
        {
            run.QuiesceOutcome = $"freeze failed: {e.Message}";
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"quiesce is required but the guest could not be frozen: {e.Message}");
        }
    }

    private async Task ThawAsync(long freezeStart)
    {
        try
        {
            await Hypervisor.ThawFileSystemsAsync(DomainName, CancellationToken.None);
        }
        catch (HypervisorException e)
        {
            LogThawFailed(_context.Logger, _context.VmKey, e.Message);
        }

        _run.FreezeMilliseconds = Stopwatch.GetElapsedTime(freezeStart).TotalMilliseconds;
    }

    // ---- 2. Copy -------------------------------------------------------------------------------------------------

    /// <summary>
    /// Copies every frozen base to the backup set, with the data digest computed while copying (the full SHA-256,
    /// which hashes every hole as zeros, is read back after the commit, outside the overlay window). The disks are
    /// copied at the same time (up to <see cref="BackupOptions.ParallelCopies"/>), except under a bandwidth limit, which is the run's
    /// whole budget. Every disk's result is persisted at once, with the intent to commit; each disk's end and the
    /// progress are only shown to views and watchers (a copy resumed after a crash starts again from zero anyway).
    /// </summary>
    private async Task CopyDisksAsync(CancellationToken cancellationToken)
    {
        var run = _run;
        await RequireOverlaysActiveAsync(cancellationToken);
        var waiting = new Queue<BackupDiskState>(run.Disks.Where(d => !d.Copied));
        var width = run.BandwidthBytesPerSecond > 0 ? 1 : Math.Max(1, _context.Options.ParallelCopies);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var running = new List<DiskCopy>();
        try
        {
            while (waiting.Count > 0 || running.Count > 0)
            {
                while (waiting.Count > 0 && running.Count < width)
                {
                    running.Add(await StartCopyAsync(waiting.Dequeue(), stop.Token));
                }

                await Task.WhenAny(running.Select(c => (Task)c.Task).Append(Task.Delay(TimeSpan.FromSeconds(1), _context.Time, cancellationToken)));
                var finished = running.Where(c => c.Task.IsCompleted).ToList();
                foreach (var copy in running.Where(c => !c.Task.IsCompleted && c.Progress.BytesDone != c.Disk.BytesCopied))
                {
                    copy.Disk.BytesCopied = copy.Progress.BytesDone;
                }

                if (finished.Count == 0)
                {
                    await _records.NoteLiveChangeAsync(cancellationToken);
                    continue;
                }

                foreach (var copy in finished)
                {
                    running.Remove(copy);
                    var result = await copy.Task; // a failed copy throws here; the others are stopped below
                    var disk = copy.Disk;
                    disk.BytesCopied = result.BytesCopied;
                    disk.BytesTotal = Math.Max(disk.BytesTotal, result.BytesCopied);
                    disk.Sha256 = null; // read back from the copy after the commit (VerifyDiskAsync)
                    disk.DataSha256 = result.DataSha256;
                    disk.Copied = true;
                    copy.Activity?.SetTag("bytes", result.BytesCopied);
                    copy.Activity?.Dispose();
                    Telemetry.BytesCopied.Add(result.BytesCopied, new TagList { { "host", _context.Host }, { "vm", _context.Vm } });

                    // One step record per disk, as before copies ran side by side. Not persisted one by one: every
                    // disk's result is persisted with the next step (the intent to commit) in one write, and a run
                    // resumed at Copying copies every disk again (the bases are immutable under the overlays).
                    _records.Add(BackupStep.Copying, $"{disk.Target}: {result.BytesCopied} bytes in {result.Duration.TotalMilliseconds:F0} ms");
                    await _records.NoteLiveChangeAsync(cancellationToken);
                    _steps.Reached(Copy, DiskCopied, run.Disks.Count(d => d.Copied), run.Disks.Count);
                }
            }
        }
        catch
        {
            // One copy failed (or the run is cancelled): stop the others; each deletes its partial file.
            await stop.CancelAsync();
            foreach (var copy in running)
            {
                await copy.Task.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Current);
                copy.Activity?.Dispose();
            }

            throw;
        }

        // Every copy is complete and fsynced, and nothing writes it again: read them back now, beside the commit and
        // the clean-up (the verify step waits for them and compares). Not earlier, beside the other disks' copies:
        // on a busy host the hashing would take the CPU those copies need, and keep the VM on its overlays longer.
        foreach (var disk in run.Disks.Where(d => d.Copied && !d.Verified))
        {
            _readBacks[disk.Target] = ReadBackAsync(Hypervisor, disk, run.Verify, _readBackStop.Token);
        }

        await _records.PersistAsync(BackupStep.Committing, null, cancellationToken);
    }

    private async Task<DiskCopy> StartCopyAsync(BackupDiskState disk, CancellationToken cancellationToken)
    {
        // Restart an interrupted copy from the start: the base is immutable under the overlay.
        if (await Hypervisor.Images.ExistsAsync(disk.BackupPath, cancellationToken))
        {
            await Hypervisor.Images.DeleteAsync(disk.BackupPath, cancellationToken);
        }

        return StartDiskCopy(_context, _run, disk, "live", cancellationToken);
    }

    /// <summary>
    /// One disk's copy into the set, begun (both methods copy the same way, so the set restores the same way): a single
    /// image by the in-process sparse copy; a chain (e.g. a linked clone over a template, or a shut-off VM's overlays)
    /// flattened into one standalone qcow2, every layer's format named, so the backup restores without the template.
    /// </summary>
    internal static DiskCopy StartDiskCopy(LiveBackupContext context, BackupRunState run, BackupDiskState disk, string method, CancellationToken cancellationToken)
    {
        var activity = Telemetry.Source.StartActivity("qemu-img.copy");
        activity?.SetTag("disk", disk.Target);
        activity?.SetTag("method", method);
        var progress = new CopyProgressHolder();
        var task = context.Hypervisor.Images.CopyAsync(
            disk.BasePath,
            disk.Format,
            disk.BackupPath,
            new CopyOptions
            {
                ComputeSha256 = false,
                ComputeDataSha256 = true,
                BandwidthBytesPerSecond = run.BandwidthBytesPerSecond,
                SourceBackingChain = [.. disk.BackingChain.Select(l => new DiskLayer(l.Path, l.Format))],
                TargetFormat = disk.BackupFormat,
                Privacy = context.Options.Privacy(),
            },
            progress,
            cancellationToken);
        return new DiskCopy(disk, task, progress, activity);
    }

    internal sealed record DiskCopy(BackupDiskState Disk, Task<CopyResult> Task, CopyProgressHolder Progress, Activity? Activity);

    // ---- 3. Commit -----------------------------------------------------------------------------------------------

    /// <summary>
    /// Active commit of each overlay, awaited by event, pivoted, confirmed in the domain definition: the disks on
    /// overlays of a running VM all at once (one block job per disk), as the script's commits are one after another.
    /// </summary>
    private async Task CommitDisksAsync(CancellationToken cancellationToken)
    {
        using var activity = Telemetry.Source.StartActivity("libvirt.block-commit");
        var domain = await Hypervisor.GetDomainAsync(DomainName, cancellationToken);
        var live = new List<BackupDiskState>();
        foreach (var disk in _run.Disks.Where(d => !d.Committed))
        {
            var current = domain.Disks.FirstOrDefault(d => d.Target == disk.Target)
                ?? throw new OrchestratorException(ErrorCode.Internal, $"disk '{disk.Target}' disappeared from '{_context.VmKey}'");
            if (current.SourcePath == disk.BasePath)
            {
                _overlays.RequireChainKept(disk, current);
                disk.Committed = true; // the base is active again: committed (or never overlaid)
            }
            else if (current.SourcePath != disk.OverlayPath)
            {
                throw new OrchestratorException(ErrorCode.Internal, $"disk '{disk.Target}' of '{_context.VmKey}' runs on '{current.SourcePath}', neither its base nor this run's overlay");
            }
            else if (!domain.IsActive)
            {
                await _overlays.CommitOfflineAsync(disk, cancellationToken);
                _records.DisksChanged();
            }
            else
            {
                live.Add(disk);
            }
        }

        if (live.Count > 0)
        {
            activity?.SetTag("disks", string.Join(",", live.Select(d => d.Target)));
            await _overlays.CommitLiveAsync(live, () => _steps.Reached(Commit, CommitReady), cancellationToken);
            _records.DisksChanged();
        }

        // Not persisted: a run resumed at Committing finds every disk on its base again (checked against the
        // recorded chain) and goes on to clean up.
        _records.Add(BackupStep.Cleaning, null);
        await _records.NoteLiveChangeAsync(cancellationToken);
    }

    // ---- 4. Clean ------------------------------------------------------------------------------------------------

    private async Task CleanOverlaysAsync(CancellationToken cancellationToken)
    {
        var domain = await Hypervisor.GetDomainAsync(DomainName, cancellationToken);
        foreach (var disk in _run.Disks)
        {
            if (DiskOverlays.Uses(domain, disk.OverlayPath))
            {
                throw new OrchestratorException(ErrorCode.Internal, $"overlay '{disk.OverlayPath}' is still in use; not deleting it");
            }

            if (await Hypervisor.Images.ExistsAsync(disk.OverlayPath, cancellationToken))
            {
                await Hypervisor.Images.DeleteAsync(disk.OverlayPath, cancellationToken);
            }
        }

        if (!_run.RollingBack)
        {
            // Not persisted: verifying only reads the copies and writes the manifest, and a run resumed at Cleaning
            // finds the overlays gone and verifies again.
            _records.Add(BackupStep.Verifying, null);
            await _records.NoteLiveChangeAsync(cancellationToken);
        }
    }

    // ---- 5. Verify -----------------------------------------------------------------------------------------------

    /// <summary>
    /// Reads every copy back for its SHA-256 (for the manifest) and its data digest, which must match the one taken
    /// while copying; with verification on, also runs qemu-img check beside it. All disks at once. This runs after the
    /// commit: hashing a large, mostly empty disk no longer keeps the VM on its overlays.
    /// </summary>
    private Task VerifyDisksAsync(CancellationToken cancellationToken) =>
        Task.WhenAll(_run.Disks.Where(d => !d.Verified).Select(d => VerifyDiskAsync(d, _run.Verify, ReadBackOf(d, cancellationToken))));

    /// <summary>The read-back begun when the disk's copy ended, else (a resumed run) one begun now.</summary>
    private Task<ReadBack> ReadBackOf(BackupDiskState disk, CancellationToken cancellationToken)
    {
        if (_readBacks.Remove(disk.Target, out var early))
        {
            // Cancelled with the run as well: the copy's own token ended with the copy step.
            return early.WaitAsync(cancellationToken);
        }

        return ReadBackAsync(Hypervisor, disk, _run.Verify, cancellationToken);
    }

    /// <summary>The verify step of both methods (<see cref="OfflineBackupWorkflow"/> too): every copy read back.</summary>
    internal static Task VerifyDisksAsync(IHypervisor hypervisor, BackupRunState run, CancellationToken cancellationToken) =>
        Task.WhenAll(run.Disks.Where(d => !d.Verified).Select(d => VerifyDiskAsync(d, run.Verify, ReadBackAsync(hypervisor, d, run.Verify, cancellationToken))));

    /// <summary>What reading a copy back found: its digests and, when verifying a qcow2 copy, its qemu-img check.</summary>
    internal sealed record ReadBack(ImageDigests Digests, ImageCheckResult? Check);

    /// <summary>
    /// Reads one copy back once for both its digests; when verifying, a qcow2 copy is checked by qemu-img beside it. A
    /// raw copy has no metadata to check (qemu-img check answers "format has no consistency checks"): reading every byte
    /// back and matching the digest taken while copying is its whole verification, so no process is started for it.
    /// </summary>
    internal static async Task<ReadBack> ReadBackAsync(IHypervisor hypervisor, BackupDiskState disk, bool check, CancellationToken cancellationToken)
    {
        using var activity = Telemetry.Source.StartActivity("backup.read-back");
        activity?.SetTag("disk", disk.Target);
        var checking = check && disk.BackupFormat != "raw" ? hypervisor.Images.CheckAsync(disk.BackupPath, disk.BackupFormat, cancellationToken) : null;
        var digests = await hypervisor.Images.ComputeDigestsAsync(disk.BackupPath, cancellationToken);
        return new ReadBack(digests, checking is null ? null : await checking);
    }

    private static async Task VerifyDiskAsync(BackupDiskState disk, bool check, Task<ReadBack> reading)
    {
        using var activity = Telemetry.Source.StartActivity("backup.verify-disk");
        activity?.SetTag("disk", disk.Target);
        var (digests, checkResult) = await reading;
        if (checkResult is { Clean: false } result)
        {
            throw new OrchestratorException(ErrorCode.Internal, $"copy of '{disk.Target}' failed qemu-img check: {result.Errors} errors, {result.Leaks} leaks");
        }

        if (disk.DataSha256 is not null && !string.Equals(digests.DataSha256, disk.DataSha256, StringComparison.OrdinalIgnoreCase))
        {
            throw new OrchestratorException(ErrorCode.Internal, $"copy of '{disk.Target}' does not match what was copied: data digest {digests.DataSha256} read back, {disk.DataSha256} written");
        }

        // A run copied before the data digest existed carries the full SHA-256 from its copy instead.
        if (disk.Sha256 is not null && !string.Equals(digests.Sha256, disk.Sha256, StringComparison.OrdinalIgnoreCase))
        {
            throw new OrchestratorException(ErrorCode.Internal, $"copy of '{disk.Target}' does not match its checksum: {digests.Sha256} read back, {disk.Sha256} written");
        }

        disk.Sha256 = digests.Sha256;
        disk.Verified = check;
    }

    // ---- 6. Manifest ---------------------------------------------------------------------------------------------

    private Task WriteManifestAsync(CancellationToken cancellationToken) => WriteManifestAsync(_context, _run, cancellationToken);

    /// <summary>The manifest step of both methods (<see cref="OfflineBackupWorkflow"/> too): one format, so restore reads either.</summary>
    internal static async Task WriteManifestAsync(LiveBackupContext context, BackupRunState run, CancellationToken cancellationToken)
    {
        var set = new BackupSet(run.BackupSetPath, context.Options);
        var nvram = await set.CopyNvramAsync(run.DomainXml, cancellationToken);
        var manifest = new
        {
            format = "orchestrator-backup/1",
            orchestrator_version = typeof(LiveBackupWorkflow).Assembly.GetName().Version?.ToString(),
            run = BackupRunKeys.Of(context.Host, context.Vm, run.RunId),
            method = run.Method.Name(),
            host = context.Host,
            vm = context.Vm,
            vm_uuid = run.VmUuid,
            started_at = run.StartedAt,
            finished_at = context.Time.GetUtcNow(),
            quiesce = run.QuiesceOutcome,
            freeze_ms = run.FreezeMilliseconds,
            guest_paused_ms = run.PausedMilliseconds,
            disks = run.Disks.Select(d => new
            {
                target = d.Target,
                file = Path.GetFileName(d.BackupPath),
                format = d.BackupFormat,
                source = d.BasePath,
                source_format = d.Format,

                // The chain the disk ran on below its active image; the copy holds all of it, flattened.
                source_backing_chain = d.BackingChain.Select(l => new { path = l.Path, format = l.Format }),
                virtual_size = d.VirtualSize,
                bytes = d.BytesCopied,
                sha256 = d.Sha256,
                data_sha256 = d.DataSha256,
                verified = d.Verified,
            }),
            domain_xml = run.DomainXml,
            nvram,
        };
        await set.WriteManifestAsync(manifest, cancellationToken);
    }

    // ---- Shared checks -------------------------------------------------------------------------------------------

    /// <summary>
    /// The live method works on a running VM and on a paused one (proven on the lab: the snapshot and the active commit
    /// run while the vCPUs are stopped, and the VM stays paused); a shut-off VM has no QEMU to run them.
    /// </summary>
    internal static bool CanRunLive(DomainPowerState state) => state is DomainPowerState.Running or DomainPowerState.Blocked or DomainPowerState.Paused;

    private async Task<bool> AnyOverlayActiveAsync(CancellationToken cancellationToken)
    {
        var domain = await Hypervisor.GetDomainAsync(DomainName, cancellationToken);
        return _run.Disks.Any(d => domain.Disks.Any(x => x.SourcePath == d.OverlayPath));
    }

    private async Task RequireOverlaysActiveAsync(CancellationToken cancellationToken)
    {
        var domain = await Hypervisor.GetDomainAsync(DomainName, cancellationToken);
        var missing = _run.Disks.Where(d => domain.Disks.FirstOrDefault(x => x.Target == d.Target)?.SourcePath != d.OverlayPath).Select(d => d.Target).ToList();
        if (missing.Count > 0)
        {
            throw new OrchestratorException(ErrorCode.Internal, $"overlays of {string.Join(", ", missing)} are not active: the bases are not frozen, copying would be unsafe");
        }
    }

    private async Task DeleteStrayOverlaysAsync(CancellationToken cancellationToken) =>
        await DeleteStrayOverlaysAsync(await Hypervisor.GetDomainAsync(DomainName, cancellationToken), cancellationToken);

    /// <summary>Deletes this run's overlay files that exist and that no disk of <paramref name="domain"/> (just read) uses.</summary>
    private async Task DeleteStrayOverlaysAsync(DomainInfo domain, CancellationToken cancellationToken)
    {
        foreach (var disk in _run.Disks)
        {
            await _overlays.DeleteIfUnusedAsync(domain, disk.OverlayPath, cancellationToken);
        }
    }

    // ---- Observing its own steps ---------------------------------------------------------------------------------

    void IStepObserver.BeforeStep(string step)
    {
        // The guest's pauses so far, from its lifecycle events (the manifest records them).
        if (_pauses is { } pauses)
        {
            _run.PausedMilliseconds = Math.Max(_run.PausedMilliseconds, pauses.TotalMilliseconds);
        }
    }

    void IStepObserver.AttemptFailed(string step, int attempt, Exception error)
    {
        _run.Error ??= Describe(error);
        LogBackupStepFailed(_context.Logger, _context.VmKey, _run.RunId, step, attempt, error.Message);
    }

    private void Tag(Activity? activity)
    {
        activity?.SetTag("host", _context.Host);
        activity?.SetTag("vm", _context.Vm);
        activity?.SetTag("run", _run.RunId);
    }

    private static string Describe(Exception e) => e switch
    {
        HypervisorException { Kind: HypervisorErrorKind.NoSpace } => $"target out of space: {e.Message}",
        IOException io when io.HResult == 28 || io.Message.Contains("No space left", StringComparison.OrdinalIgnoreCase) => $"target out of space: {e.Message}",
        _ => e.Message,
    };

    /// <summary>The commit and clean-up attempts, counted in the run (persisted before each retry's wait).</summary>
    private sealed class RunRetryLedger(BackupRunState run, IBackupRunRecords records) : IRetryLedger
    {
        public int Attempts
        {
            get => run.FinishAttempts;
            set => run.FinishAttempts = value;
        }

        public DateTimeOffset? FailingSince
        {
            get => run.FinishFailingSince;
            set => run.FinishFailingSince = value;
        }

        public Task SaveAsync(CancellationToken cancellationToken) => records.PersistAsync(cancellationToken);
    }

    /// <summary>Progress from the copy, read between awaits (the copy reports from another thread).</summary>
    internal sealed class CopyProgressHolder : IProgress<CopyProgress>
    {
        private long _bytesDone;

        public long BytesDone => Interlocked.Read(ref _bytesDone);

        public void Report(CopyProgress value) => Interlocked.Exchange(ref _bytesDone, value.BytesDone);
    }

    /// <summary>Sums the guest's pauses from its lifecycle events (raised on the driver's event thread).</summary>
    private sealed class PauseTotals : IDisposable
    {
        private readonly IHypervisor _hypervisor;
        private readonly string _domain;
        private readonly Lock _gate = new();
        private DateTimeOffset? _suspendedAt;
        private double _total;

        public PauseTotals(IHypervisor hypervisor, string domain)
        {
            _hypervisor = hypervisor;
            _domain = domain;
            hypervisor.DomainEvent += OnEvent;
        }

        public double TotalMilliseconds
        {
            get
            {
                lock (_gate)
                {
                    return _total;
                }
            }
        }

        public void Dispose() => _hypervisor.DomainEvent -= OnEvent;

        private void OnEvent(object? sender, DomainEvent e)
        {
            if (e.Kind != DomainEventKind.Lifecycle || e.Domain != _domain)
            {
                return;
            }

            lock (_gate)
            {
                if (e.Lifecycle == LifecycleEventType.Suspended)
                {
                    _suspendedAt ??= e.At;
                }
                else if (e.Lifecycle is LifecycleEventType.Resumed or LifecycleEventType.Stopped && _suspendedAt is { } at)
                {
                    _total += (e.At - at).TotalMilliseconds;
                    _suspendedAt = null;
                }
            }
        }
    }
}
