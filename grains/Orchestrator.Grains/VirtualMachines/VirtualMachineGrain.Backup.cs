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

    /// <summary>
    /// Changes to the active run shown to views and watchers but not persisted (copy progress, a disk committed,
    /// verification begun): recovery does not need them. A view's version is the persisted version times
    /// <see cref="LiveChangesPerPersist"/> plus these, so it only grows, across crashes too (a resumed run persists
    /// before anything else, which moves past every live change the lost activation showed).
    /// </summary>
    private long _liveChanges;

    /// <summary>After this many live changes the run is persisted anyway (a copy reports once a second: about every 17 minutes).</summary>
    private const long LiveChangesPerPersist = 1024;

    public async Task<BackupRunView> StartBackupAsync(BackupRequest request, CancellationToken cancellationToken = default)
    {
        await LearnFromHostAsync(cancellationToken);
        RequireKnown();
        var target = BackupTargets.Resolve(request.Target, backupOptions.Value);
        BackupRequestRules.Validate(request);

        var now = time.GetUtcNow();
        var runId = $"b-{now:yyyyMMdd-HHmmss}-{Guid.NewGuid().ToString("N")[..6]}";
        using var activity = Telemetry.Source.StartActivity("backup.admit");
        Tag(activity, runId);
        // The lock is taken in memory and persisted with the run, in one write: a process that dies during preflight
        // (which touches nothing) leaves nothing to release.
        await BeginOperationAsync(BackupKind, runId, cancellationToken, persist: false);
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

    public async Task<BackupRunView> GetBackupAsync(string runId, CancellationToken cancellationToken = default) =>
        View(await FindRunAsync(runId, cancellationToken));

    public async Task<IReadOnlyList<BackupRunView>> ListBackupsAsync(CancellationToken cancellationToken = default)
    {
        // The history is read from its own state for this call and not kept: a VM grain's memory does not grow with it.
        IEnumerable<BackupRunState> runs = await History.ReadAsync(cancellationToken);
        if (state.State.ActiveBackup is { } active)
        {
            // Between the two writes that end a run it is in both states: listed once.
            runs = runs.Where(r => r.RunId != active.RunId).Append(active);
        }

        return [.. runs.OrderByDescending(r => r.StartedAt).Select(View)];
    }

    public async Task<BackupRunView> WaitBackupAsync(string runId, long afterVersion, TimeSpan maxWait, CancellationToken cancellationToken = default)
    {
        var deadline = time.GetUtcNow() + maxWait;
        while (true)
        {
            var run = await FindRunAsync(runId, cancellationToken);
            var remaining = deadline - time.GetUtcNow();
            if (VersionOf(run) > afterVersion || run.IsTerminal || remaining <= TimeSpan.Zero)
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
        // A repair cut short is not running any more either: each of its steps starts from the live chain, so the
        // operator runs it again (a commit job it left is waited for, not started twice).
        if (state.State.Operation is { Kind: BackupKind or RepairKind } op && state.State.ActiveBackup?.RunId != op.Id)
        {
            state.State.Operation = null;
            await _writes.WriteAsync(cancellationToken);
            LogOrphanedLockReleased(logger, VmKey, op.Kind, op.Id, op.StartedAt);
        }
    }

    public async Task ReconcileBackupsAsync(CancellationToken cancellationToken = default)
    {
        await CleanUpLeftoverTestAsync();
        if (state.State.ActiveBackup is { IsTerminal: false } && _backupTask is null or { IsCompleted: true })
        {
            LogBackupResumed(logger, VmKey, state.State.ActiveBackup.RunId, state.State.ActiveBackup.Step);
            StartBackupTask();
        }
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
        using var slot = await TakeBackupSlotAsync(run, cancellationToken);
        while (slot is not null && !run.IsTerminal && !cancellationToken.IsCancellationRequested)
        {
            run.PausedMilliseconds = Math.Max(run.PausedMilliseconds, pauses.TotalMilliseconds);
            var step = run.Step;
            using var stepActivity = Telemetry.Source.StartActivity($"backup.{step.ToString().ToLowerInvariant()}");
            Tag(stepActivity, run.RunId);
            try
            {
                switch (step)
                {
                    case BackupStep.Admitted or BackupStep.Preflight or BackupStep.Queued:
                        // Crashed before the intent to create overlays was persisted: nothing was touched.
                        await PersistBackupAsync(run, BackupStep.Quiesce, "resumed after restart", cancellationToken);
                        break;
                    case BackupStep.Quiesce:
                        await CreateOverlaysAsync(run, cancellationToken);

                        // Not persisted: the overlays' names follow from the run id (persisted at Quiesce), and a run
                        // resumed at Quiesce finds them active and goes on to copy (copying replaces any partial copy).
                        AddStep(run, BackupStep.OverlayActive, null);
                        AddStep(run, BackupStep.Copying, null);
                        await NoteLiveChangeAsync(run, cancellationToken);
                        KillIfAsked("OverlayActive");
                        break;
                    case BackupStep.OverlayActive:
                        // Persisted only by earlier versions, which wrote this step apart from the next.
                        await PersistBackupAsync(run, run.RollingBack ? BackupStep.Committing : BackupStep.Copying, null, cancellationToken);
                        break;
                    case BackupStep.Copying:
                        await CopyDisksAsync(run, cancellationToken);
                        await PersistBackupAsync(run, BackupStep.Committing, null, cancellationToken);
                        break;
                    case BackupStep.Committing:
                        await CommitDisksAsync(run, cancellationToken);

                        // Not persisted: a run resumed at Committing finds every disk on its base again (checked
                        // against the recorded chain) and goes on to clean up.
                        AddStep(run, BackupStep.Cleaning, null);
                        await NoteLiveChangeAsync(run, cancellationToken);
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
                            // Not persisted: verifying only reads the copies and writes the manifest, and a run resumed
                            // at Cleaning finds the overlays gone and verifies again.
                            AddStep(run, BackupStep.Verifying, null);
                            await NoteLiveChangeAsync(run, cancellationToken);
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

    /// <summary>
    /// One of this silo's backup slots (<see cref="BackupSlots"/>). A run that has not touched its VM yet waits for one
    /// at step Queued (shown to views and watchers, not persisted: a run resumed from the store queues again); a run
    /// resumed past its overlays takes one without waiting. Null when the wait was cancelled (the activation is going)
    /// or ran out (the run then ended Failed, having touched nothing).
    /// </summary>
    private async Task<BackupSlots.Lease?> TakeBackupSlotAsync(BackupRunState run, CancellationToken cancellationToken)
    {
        if (run.Step is not (BackupStep.Admitted or BackupStep.Preflight or BackupStep.Queued or BackupStep.Quiesce))
        {
            return slots.Enter();
        }

        if (slots.TryEnter() is { } free)
        {
            return free;
        }

        var resumeAt = run.Step is BackupStep.Queued ? BackupStep.Quiesce : run.Step;
        var since = time.GetUtcNow();
        var timeout = backupOptions.Value.QueueTimeout;
        AddStep(run, BackupStep.Queued, $"waiting for one of this silo's {slots.Limit} backup slots ({slots.WaitingCount} runs waiting before it)");
        BackupSlots.QueuedRuns.Add(1, new TagList { { "host", Key.Host } });
        await NoteLiveChangeAsync(run, cancellationToken);
        try
        {
            var lease = await slots.WaitAsync(timeout, cancellationToken);
            if (resumeAt == BackupStep.Quiesce)
            {
                AddStep(run, BackupStep.Quiesce, $"backup slot after {(time.GetUtcNow() - since).TotalSeconds:F1} s queued");
            }
            else
            {
                // Persisted at Admitted or Preflight by an earlier version: the loop persists Quiesce first.
                run.Step = resumeAt;
            }

            await NoteLiveChangeAsync(run, cancellationToken);
            return lease;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return null;
        }
        catch (TimeoutException)
        {
            run.Error = $"no backup slot of this silo came free in {timeout} (Orchestrator:Backup:MaxConcurrentPerSilo = {slots.Limit}, QueueTimeout); the VM was not touched";
            DeleteBackupSet(run);
            await FinishBackupAsync(run, BackupStep.Failed, cancellationToken);
            return null;
        }
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

                await PersistRunAsync(run, cancellationToken);
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

    /// <summary>Moves the run to <paramref name="step"/> and persists it (the intent of that step's side effects).</summary>
    private async Task PersistBackupAsync(BackupRunState run, BackupStep step, string? note, CancellationToken cancellationToken)
    {
        AddStep(run, step, note);
        await PersistRunAsync(run, cancellationToken);
    }

    /// <summary>Records a step in memory; the next persisted write of the run stores it.</summary>
    private void AddStep(BackupRunState run, BackupStep step, string? note)
    {
        run.Step = step;
        run.Steps.Add(new BackupStepEntry { Step = step, At = time.GetUtcNow(), Note = note });
    }

    private async Task PersistRunAsync(BackupRunState run, CancellationToken cancellationToken)
    {
        run.Version++;
        _liveChanges = 0;
        state.State.ActiveBackup = run;
        await _writes.WriteAsync(cancellationToken);
        TrackBackup();
        SignalBackupChanged();
    }

    /// <summary>A change watchers see at once and recovery does not need: kept in memory (persisted every <see cref="LiveChangesPerPersist"/>).</summary>
    private async Task NoteLiveChangeAsync(BackupRunState run, CancellationToken cancellationToken)
    {
        if (++_liveChanges >= LiveChangesPerPersist - 1)
        {
            await PersistRunAsync(run, cancellationToken);
            return;
        }

        // The gauges follow the run's step in memory (overlays exist from OverlayActive on, persisted or not).
        TrackBackup();
        SignalBackupChanged();
    }

    private long VersionOf(BackupRunState run) =>
        (run.Version * LiveChangesPerPersist) + (ReferenceEquals(run, state.State.ActiveBackup) ? _liveChanges : 0);

    /// <summary>
    /// Ends the run with two writes: the finished run into the history first, then the active run and the lock out of
    /// the hot state. A crash between them leaves the run in both (never in neither); activation settles it
    /// (<see cref="SettleEndedActiveRunAsync"/>), and a run finished again after such a crash is not added twice.
    /// </summary>
    private async Task FinishBackupAsync(BackupRunState run, BackupStep outcome, CancellationToken cancellationToken)
    {
        // The ended run is a copy until both writes are done: whoever watches the active run sees it end only once
        // the lock is released too (a caller told "completed" may start the next backup at once).
        var endedAt = time.GetUtcNow();
        var ended = run with
        {
            EndedAt = endedAt,
            Step = outcome,
            Steps = [.. run.Steps, new BackupStepEntry { Step = outcome, At = endedAt, Note = outcome == BackupStep.Failed ? run.Error : null }],
            Version = run.Version + 1,

            // The domain XML is in the set's manifest (written by the verify step); a failed run has no set to restore.
            DomainXml = "",
        };
        var limit = Math.Max(1, backupOptions.Value.HistoryLimit);
        await History.UpdateAsync(
            history =>
            {
                history.RemoveAll(r => r.RunId == ended.RunId);
                history.Add(ended);
                if (outcome == BackupStep.Completed && ended.Retention is { Length: 4 } retention)
                {
                    ApplyRetention(ended, retention, history);
                }

                if (history.Count > limit)
                {
                    history.RemoveRange(0, history.Count - limit);
                }
            },
            cancellationToken);

        state.State.ActiveBackup = null;
        if (state.State.Operation?.Id == run.RunId)
        {
            state.State.Operation = null;
        }

        if (outcome == BackupStep.Completed && (state.State.LastCompletedBackupAt is not { } last || endedAt > last))
        {
            state.State.LastCompletedBackupAt = endedAt;
        }

        // The task's own object ends too (its loop stops on a terminal step).
        run.EndedAt = ended.EndedAt;
        run.Step = ended.Step;
        run.Steps = ended.Steps;
        run.Version = ended.Version;
        run.DomainXml = "";
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

    /// <summary>The active run, the newest finished one (both in memory), or one read from the history.</summary>
    private async Task<BackupRunState> FindRunAsync(string runId, CancellationToken cancellationToken)
    {
        if (state.State.ActiveBackup is { } active && active.RunId == runId)
        {
            return active;
        }

        if (History.Newest is { } newest && newest.RunId == runId)
        {
            return newest;
        }

        return (await History.ReadAsync(cancellationToken)).LastOrDefault(r => r.RunId == runId)
            ?? throw OrchestratorException.NotFound($"backup run '{BackupRunKeys.Of(Key.Host, Key.Vm, runId)}' does not exist");
    }

    /// <summary>
    /// Moves finished runs that state written by earlier versions keeps in the hot state (with their domain XML) into
    /// the history, without the XML (each set's manifest holds it). The history is written first: a crash before the
    /// hot state is written only repeats the move, which adds no run twice.
    /// </summary>
    private async Task MigrateLegacyHistoryAsync(CancellationToken cancellationToken)
    {
        var legacy = state.State.LegacyBackupHistory;
        if (legacy.Count == 0)
        {
            return;
        }

        var limit = Math.Max(1, backupOptions.Value.HistoryLimit);
        await History.UpdateAsync(
            history =>
            {
                var known = history.Select(r => r.RunId).ToHashSet(StringComparer.Ordinal);
                var merged = history.Concat(legacy.Where(r => !known.Contains(r.RunId)).Select(r => r with { DomainXml = "" }))
                    .OrderBy(r => r.StartedAt)
                    .ToList();
                history.Clear();
                history.AddRange(merged.Skip(Math.Max(0, merged.Count - limit)));
            },
            cancellationToken);

        var lastCompleted = legacy.Where(r => r.Step == BackupStep.Completed).Max(r => r.EndedAt);
        if (lastCompleted is { } at && (state.State.LastCompletedBackupAt is not { } last || at > last))
        {
            state.State.LastCompletedBackupAt = at;
        }

        state.State.LegacyBackupHistory = [];
        await _writes.WriteAsync(cancellationToken);
        LogHistoryMigrated(logger, VmKey, legacy.Count);
    }

    /// <summary>
    /// The process stopped between the two writes that end a run: the run is in the history and still active here.
    /// The second write is done now (the lock released), instead of running the finished run again.
    /// </summary>
    private async Task SettleEndedActiveRunAsync(CancellationToken cancellationToken)
    {
        if (state.State.ActiveBackup is not { } active)
        {
            return;
        }

        var ended = (await History.ReadAsync(cancellationToken)).LastOrDefault(r => r.RunId == active.RunId);
        if (ended is null)
        {
            return;
        }

        state.State.ActiveBackup = null;
        if (state.State.Operation?.Id == active.RunId)
        {
            state.State.Operation = null;
        }

        if (ended is { Step: BackupStep.Completed, EndedAt: { } at } && (state.State.LastCompletedBackupAt is not { } last || at > last))
        {
            state.State.LastCompletedBackupAt = at;
        }

        await _writes.WriteAsync(cancellationToken);
        LogEndedRunSettled(logger, VmKey, active.RunId, ended.Step);
        if (ended is { Step: BackupStep.Completed, EndedAt: { } endedAt })
        {
            await ReportProtectionAsync(PolicyKind.LiveBackup, endedAt);
        }
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
        VersionOf(run),
        run.Policy,
        run.PolicyVersion,
        run.PolicyRun,
        LastTestOf(run.RunId));

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
