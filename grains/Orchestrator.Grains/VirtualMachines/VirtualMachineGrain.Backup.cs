using System.Diagnostics;
using Orchestrator.Grains.Backups;
using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.VirtualMachines;

/// <summary>
/// The live-backup workflow of this VM: an explicit persisted state machine run by a task the activation owns.
/// Every step persists its intent before its side effect and its result after, and checks the real chain
/// first, so running the machine again from any persisted step (after a crash) finishes or rolls back.
/// </summary>
internal sealed partial class VirtualMachineGrain
{
    private const string BackupKind = "backup";
    private Task? _backupTask;
    private CancellationTokenSource? _backupCancellation;
    private TaskCompletionSource _backupChanged = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public async Task<BackupRunView> StartBackupAsync(BackupRequest request, CancellationToken cancellationToken = default)
    {
        RequireKnown();
        var target = BackupTargets.Resolve(request.Target, backupOptions.Value);
        BackupRequestRules.Validate(request);

        var now = time.GetUtcNow();
        var runId = $"b-{now:yyyyMMdd-HHmmss}-{Guid.NewGuid().ToString("N")[..6]}";
        using var activity = Telemetry.Source.StartActivity("backup.admit");
        Tag(activity, runId);
        await BeginOperationAsync(BackupKind, runId, cancellationToken);
        KillIfAsked("Preflight");
        BackupRunState run;
        try
        {
            run = await PreflightAsync(runId, target, request, now, cancellationToken);
        }
        catch
        {
            await EndOperationAsync(runId, cancellationToken);
            throw;
        }

        run.TraceParent = activity?.Id ?? Activity.Current?.Id;
        state.State.ActiveBackup = run;
        await PersistBackupAsync(run, BackupStep.Quiesce, "preflight passed; creating overlays", cancellationToken);
        StartBackupTask();
        return View(run);
    }

    public Task<BackupRunView> GetBackupAsync(string runId, CancellationToken cancellationToken = default) =>
        Task.FromResult(View(FindRun(runId)));

    public Task<IReadOnlyList<BackupRunView>> ListBackupsAsync(CancellationToken cancellationToken = default)
    {
        var runs = state.State.BackupHistory.AsEnumerable();
        if (state.State.ActiveBackup is { } active)
        {
            runs = runs.Append(active);
        }

        return Task.FromResult<IReadOnlyList<BackupRunView>>([.. runs.OrderByDescending(r => r.StartedAt).Select(View)]);
    }

    public async Task<BackupRunView> WaitBackupAsync(string runId, long afterVersion, TimeSpan maxWait, CancellationToken cancellationToken = default)
    {
        var deadline = time.GetUtcNow() + maxWait;
        while (true)
        {
            var run = FindRun(runId);
            var remaining = deadline - time.GetUtcNow();
            if (run.Version > afterVersion || run.IsTerminal || remaining <= TimeSpan.Zero)
            {
                return View(run);
            }

            try
            {
                await _backupChanged.Task.WaitAsync(remaining, time, cancellationToken);
            }
            catch (TimeoutException)
            {
            }
        }
    }

    /// <summary>
    /// A backup lock whose run was never persisted (the process died during preflight, after BeginOperationAsync
    /// stored the lock and before the run was stored) has nothing to finish or roll back: preflight touches nothing.
    /// </summary>
    private async Task ReleaseOrphanedBackupLockAsync(CancellationToken cancellationToken)
    {
        if (state.State.Operation is { Kind: BackupKind } op && state.State.ActiveBackup?.RunId != op.Id)
        {
            state.State.Operation = null;
            await _writes.WriteAsync(cancellationToken);
            LogOrphanedLockReleased(logger, VmKey, op.Kind, op.Id, op.StartedAt);
        }
    }

    public Task ReconcileBackupsAsync(CancellationToken cancellationToken = default)
    {
        if (state.State.ActiveBackup is { IsTerminal: false } && _backupTask is null or { IsCompleted: true })
        {
            LogBackupResumed(logger, VmKey, state.State.ActiveBackup.RunId, state.State.ActiveBackup.Step);
            StartBackupTask();
        }

        return Task.CompletedTask;
    }

    private void StartBackupTask()
    {
        _backupCancellation ??= new CancellationTokenSource();
        _backupTask = RunBackupAsync(_backupCancellation.Token);
        this.DelayDeactivation(TimeSpan.FromHours(12));
    }

    /// <summary>Drives the persisted run from its current step to Completed or Failed.</summary>
    private async Task RunBackupAsync(CancellationToken cancellationToken)
    {
        var run = state.State.ActiveBackup!;
        var parent = ActivityContext.TryParse(run.TraceParent, null, out var context) ? context : default;
        using var activity = Telemetry.Source.StartActivity("backup.run", ActivityKind.Internal, parent);
        Tag(activity, run.RunId);
        using var pauses = new PauseTotals(hypervisor, DomainName);
        while (!run.IsTerminal && !cancellationToken.IsCancellationRequested)
        {
            run.PausedMilliseconds = Math.Max(run.PausedMilliseconds, pauses.TotalMilliseconds);
            var step = run.Step;
            using var stepActivity = Telemetry.Source.StartActivity($"backup.{step.ToString().ToLowerInvariant()}");
            Tag(stepActivity, run.RunId);
            try
            {
                switch (step)
                {
                    case BackupStep.Admitted or BackupStep.Preflight:
                        // Crashed before the intent to create overlays was persisted: nothing was touched.
                        await PersistBackupAsync(run, BackupStep.Quiesce, "resumed after restart", cancellationToken);
                        break;
                    case BackupStep.Quiesce:
                        await CreateOverlaysAsync(run, cancellationToken);
                        await PersistBackupAsync(run, BackupStep.OverlayActive, null, cancellationToken);
                        KillIfAsked("OverlayActive");
                        break;
                    case BackupStep.OverlayActive:
                        await PersistBackupAsync(run, run.RollingBack ? BackupStep.Committing : BackupStep.Copying, null, cancellationToken);
                        break;
                    case BackupStep.Copying:
                        await CopyDisksAsync(run, cancellationToken);
                        await PersistBackupAsync(run, BackupStep.Committing, null, cancellationToken);
                        break;
                    case BackupStep.Committing:
                        await CommitDisksAsync(run, cancellationToken);
                        await PersistBackupAsync(run, BackupStep.Cleaning, null, cancellationToken);
                        break;
                    case BackupStep.Cleaning:
                        await CleanOverlaysAsync(run, cancellationToken);
                        if (run.RollingBack)
                        {
                            DeleteBackupSet(run);
                            await FinishBackupAsync(run, BackupStep.Failed, cancellationToken);
                        }
                        else
                        {
                            await PersistBackupAsync(run, BackupStep.Verifying, null, cancellationToken);
                        }

                        break;
                    case BackupStep.Verifying:
                        await VerifyAsync(run, cancellationToken);
                        await FinishBackupAsync(run, BackupStep.Completed, cancellationToken);
                        break;
                }
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                stepActivity?.SetStatus(ActivityStatusCode.Error, e.Message);
                LogBackupStepFailed(logger, VmKey, run.RunId, step, e.Message);
                if (!await HandleBackupFailureAsync(run, step, e, cancellationToken))
                {
                    return;
                }
            }
        }

        activity?.SetTag("outcome", run.Step.ToString());
    }

    /// <summary>Decides what a failed step means; false stops the task (the periodic reconcile tries again).</summary>
    private async Task<bool> HandleBackupFailureAsync(BackupRunState run, BackupStep step, Exception e, CancellationToken cancellationToken)
    {
        run.Error ??= Describe(e);
        switch (step)
        {
            case BackupStep.Quiesce:
                // The snapshot is atomic: either every overlay is active (roll back) or none is (clean strays, fail).
                if (await AnyOverlayActiveAsync(run, cancellationToken))
                {
                    run.RollingBack = true;
                    await PersistBackupAsync(run, BackupStep.Committing, "overlay creation failed after the overlays appeared: committing back", cancellationToken);
                    return true;
                }

                await DeleteStrayOverlaysAsync(run, cancellationToken);
                DeleteBackupSet(run);
                await FinishBackupAsync(run, BackupStep.Failed, cancellationToken);
                return false;
            case BackupStep.OverlayActive or BackupStep.Copying:
                run.RollingBack = true;
                await PersistBackupAsync(run, BackupStep.Committing, "copy failed: committing the overlays back", cancellationToken);
                return true;
            case BackupStep.Verifying:
                // The VM is already back on its bases; a set that failed verification is no backup.
                DeleteBackupSet(run);
                await FinishBackupAsync(run, BackupStep.Failed, cancellationToken);
                return false;
            default:
                // Commit or clean-up failed: the VM may still run on an overlay. Retry within the budget, then give up.
                var options = backupOptions.Value;
                var now = time.GetUtcNow();
                run.FinishAttempts++;
                run.FinishFailingSince ??= now;
                var failingFor = now - run.FinishFailingSince.Value;
                if (run.FinishAttempts >= options.FinishAttempts || failingFor >= options.FinishRetryBudget)
                {
                    await GiveUpFinishingAsync(run, step, failingFor, cancellationToken);
                    return false;
                }

                run.Version++;
                state.State.ActiveBackup = run;
                await _writes.WriteAsync(cancellationToken);
                SignalBackupChanged();
                var delay = TimeSpan.FromTicks(Math.Min(
                    options.FinishRetryDelay.Ticks * (1L << Math.Min(run.FinishAttempts - 1, 10)),
                    TimeSpan.FromMinutes(1).Ticks));
                var left = options.FinishRetryBudget - failingFor;
                await Task.Delay(delay < left ? delay : left, time, cancellationToken);
                return true;
        }
    }

    /// <summary>
    /// The commit or clean-up retry budget is spent: end the run Failed rather than loop. A block job of ours still
    /// running is aborted (the VM stays on the overlay, a valid chain over its untouched base); an overlay the VM
    /// still runs on stays where it is and is named in the error (fleet overlays and overlays.alive report it).
    /// </summary>
    private async Task GiveUpFinishingAsync(BackupRunState run, BackupStep step, TimeSpan failingFor, CancellationToken cancellationToken)
    {
        var onOverlays = new List<string>();
        try
        {
            var domain = await hypervisor.GetDomainAsync(DomainName, cancellationToken);
            foreach (var disk in run.Disks)
            {
                if (domain.Disks.FirstOrDefault(d => d.Target == disk.Target) is { } live && live.SourcePath == disk.OverlayPath)
                {
                    onOverlays.Add($"{disk.Target} on {disk.OverlayPath}");
                    try
                    {
                        if (await hypervisor.GetBlockJobAsync(DomainName, disk.Target, cancellationToken) is not null)
                        {
                            await FencedAsync(h => h.AbortBlockJobAsync(DomainName, disk.Target, cancellationToken), cancellationToken);
                        }
                    }
                    catch (HypervisorException e)
                    {
                        LogGiveUpAbortFailed(logger, VmKey, run.RunId, disk.Target, e.Message);
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
        run.Error = $"{step} gave up after {run.FinishAttempts} tries over {failingFor.TotalSeconds:F0} s (budget: "
            + $"{backupOptions.Value.FinishAttempts} tries, {backupOptions.Value.FinishRetryBudget.TotalSeconds:F0} s): {run.Error}; {where}";
        LogBackupGaveUp(logger, VmKey, run.RunId, step, run.FinishAttempts, where);
        DeleteBackupSet(run);
        await FinishBackupAsync(run, BackupStep.Failed, cancellationToken);
    }

    private async Task PersistBackupAsync(BackupRunState run, BackupStep step, string? note, CancellationToken cancellationToken)
    {
        run.Step = step;
        run.Steps.Add(new BackupStepEntry { Step = step, At = time.GetUtcNow(), Note = note });
        run.Version++;
        state.State.ActiveBackup = run;
        await _writes.WriteAsync(cancellationToken);
        TrackBackup();
        SignalBackupChanged();
    }

    private async Task FinishBackupAsync(BackupRunState run, BackupStep outcome, CancellationToken cancellationToken)
    {
        run.EndedAt = time.GetUtcNow();
        run.Step = outcome;
        run.Steps.Add(new BackupStepEntry { Step = outcome, At = run.EndedAt.Value, Note = outcome == BackupStep.Failed ? run.Error : null });
        run.Version++;
        state.State.ActiveBackup = null;
        state.State.BackupHistory.Add(run);
        if (outcome == BackupStep.Completed && run.Retention is { Length: 4 } retention)
        {
            ApplyRetention(run, retention);
        }

        var limit = Math.Max(1, backupOptions.Value.HistoryLimit);
        if (state.State.BackupHistory.Count > limit)
        {
            state.State.BackupHistory.RemoveRange(0, state.State.BackupHistory.Count - limit);
        }

        if (state.State.Operation?.Id == run.RunId)
        {
            state.State.Operation = null;
        }

        await _writes.WriteAsync(cancellationToken);

        // Counted as the outcome is persisted, before anyone waiting for it is woken.
        TrackBackup();
        Telemetry.RecordBackupEnded(Key.Host, Key.Vm, run);
        if (outcome == BackupStep.Completed)
        {
            // Also before the watchers hear of the end: a policy run that sees this backup end, and whoever reads
            // compliance after it, find the fleet index up to date.
            await ReportProtectionAsync(PolicyKind.LiveBackup, run.EndedAt.Value);
        }

        SignalBackupChanged();
        LogBackupFinished(logger, VmKey, run.RunId, outcome, run.Error);
    }

    /// <summary>Publishes this VM's unfinished backup (and its overlays) to the active-backup and overlay gauges.</summary>
    private void TrackBackup()
    {
        if (!_deactivating)
        {
            var left = state.State.Disks.Count(d => Path.GetFileName(d.SourcePath).Contains(".orch-", StringComparison.Ordinal));
            BackupGauges.Track(this, Key.Host, state.State.ActiveBackup, left);
        }
    }

    private void SignalBackupChanged()
    {
        var previous = _backupChanged;
        _backupChanged = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        previous.TrySetResult();
    }

    private BackupRunState FindRun(string runId)
    {
        if (state.State.ActiveBackup is { } active && active.RunId == runId)
        {
            return active;
        }

        return state.State.BackupHistory.LastOrDefault(r => r.RunId == runId)
            ?? throw OrchestratorException.NotFound($"backup run '{BackupRunKeys.Of(Key.Host, Key.Vm, runId)}' does not exist");
    }

    private BackupRunView View(BackupRunState run) => new(
        BackupRunKeys.Of(Key.Host, Key.Vm, run.RunId),
        Key.Host,
        Key.Vm,
        run.Step,
        run.RollingBack,
        run.Error,
        run.StartedAt,
        run.EndedAt,
        run.BackupSetPath,
        [.. run.Disks.Select(d => new BackupDiskView(d.Target, d.BasePath, d.Format, d.OverlayPath, d.BackupPath, d.BytesTotal, d.BytesCopied, d.Sha256, d.Committed, d.Verified))],
        [.. run.Steps.Select(s => new BackupStepRecord(s.Step, s.At, s.Note))],
        run.QuiesceOutcome,
        run.FreezeMilliseconds,
        ActivityContext.TryParse(run.TraceParent, null, out var c) ? c.TraceId.ToString() : null,
        run.Version,
        run.Policy,
        run.PolicyVersion,
        run.PolicyRun);

    private void Tag(Activity? activity, string runId)
    {
        activity?.SetTag("host", Key.Host);
        activity?.SetTag("vm", Key.Vm);
        activity?.SetTag("run", runId);
    }

    private void KillIfAsked(string point)
    {
        if (string.Equals(backupOptions.Value.KillAt, point, StringComparison.Ordinal))
        {
            LogKilling(logger, point);
            Process.GetCurrentProcess().Kill();
        }
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

    private static string Describe(Exception e) => e switch
    {
        HypervisorException { Kind: HypervisorErrorKind.NoSpace } => $"target out of space: {e.Message}",
        IOException io when io.HResult == 28 || io.Message.Contains("No space left", StringComparison.OrdinalIgnoreCase) => $"target out of space: {e.Message}",
        _ => e.Message,
    };
}
