using System.Diagnostics;
using Orchestrator.Grains.Backups;
using Orchestrator.Grains.Checkpoints;
using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.VirtualMachines;

/// <summary>
/// The VM's side of its live backups: admission under the VM's operation lock, the persisted run (one writer, the
/// run's records handed to the workflow through <see cref="IBackupRunRecords"/>), its end in the history with
/// retention, views and watchers, and the recovery entry points (activation, periodic reconcile) that resume a run
/// at its persisted step. The steps themselves are <see cref="LiveBackupWorkflow"/>, run by a task the activation owns.
/// </summary>
internal sealed partial class VirtualMachineGrain
{
    private const string BackupKind = "backup";
    private Task? _backupTask;
    private CancellationTokenSource? _backupCancellation;
    private TaskCompletionSource _backupChanged = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completed when a run ends (no active run left, or it is terminal): what end-only waiters wait for.</summary>
    private TaskCompletionSource _backupEnded = new(TaskCreationOptions.RunContinuationsAsynchronously);

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
        BackupRunState run;
        try
        {
            // The method follows the VM's state and the request: a shut-off VM is copied offline (a backup job needs a
            // running QEMU; its checkpoints and bitmaps stay as they are, so the chain stays valid), a running or paused
            // one with a backup job when an incremental is asked for, else live with overlays (which ends the chain).
            var offline = OfflineBackupWorkflow.IsOff((await hypervisor.GetDomainAsync(Key.Vm, cancellationToken)).State);
            if (offline)
            {
                run = await OfflineBackupWorkflow.PreflightAsync(BackupContext, [CrashTest], runId, target, request, now, state.State.Disks, cancellationToken);
                if (request.Incremental)
                {
                    run.LevelReason = "the VM is shut off: an offline full copy (a backup job needs a running VM)";
                }
            }
            else if (request.Incremental)
            {
                run = await PreflightBackupJobAsync(runId, target, request, now, cancellationToken);
            }
            else
            {
                run = await LiveBackupWorkflow.PreflightAsync(BackupContext, [CrashTest], runId, target, request, now, state.State.Disks, cancellationToken);
                InvalidateIncrementalChain($"overlay backup {runId}"); // persisted with the run below
            }
        }
        catch
        {
            await EndOperationAsync(runId, cancellationToken);
            throw;
        }

        run.TraceParent = activity?.Id ?? Activity.Current?.Id;
        activity?.SetTag("method", run.Method.Name());
        state.State.ActiveBackup = run;
        if (run.Method == BackupMethod.Offline)
        {
            // Nothing of the VM is touched: the copy's intent is persisted by the workflow once it holds a backup slot.
            await PersistBackupAsync(run, BackupStep.Preflight, "preflight passed; the VM is shut off: offline copy", cancellationToken);
        }
        else
        {
            await PersistBackupAsync(run, BackupStep.Quiesce, run.IsBackupJob ? "preflight passed; starting the backup job" : "preflight passed; creating overlays", cancellationToken);
        }

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

    public Task<BackupRunView> WaitBackupAsync(string runId, long afterVersion, TimeSpan maxWait, CancellationToken cancellationToken = default) =>
        WaitRunAsync(runId, afterVersion, maxWait, cancellationToken);

    /// <summary>
    /// Woken only by a run's end, not by each of its ~12 changes: a policy run's part makes one call per backup here
    /// (it made one per change it saw, each answered with the whole run view).
    /// </summary>
    public Task<BackupRunView> WaitBackupEndAsync(string runId, TimeSpan maxWait, CancellationToken cancellationToken = default) =>
        WaitRunAsync(runId, afterVersion: null, maxWait, cancellationToken);

    /// <summary>The run once its version is above <paramref name="afterVersion"/> (null: never), it ended, or <paramref name="maxWait"/> passed.</summary>
    private async Task<BackupRunView> WaitRunAsync(string runId, long? afterVersion, TimeSpan maxWait, CancellationToken cancellationToken)
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
                await (afterVersion is null ? _backupEnded : _backupChanged).Task.WaitAsync(remaining, time, cancellationToken);
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

    /// <summary>Drives the persisted run from its current step to Completed or Failed (<see cref="LiveBackupWorkflow"/>).</summary>
    private async Task RunBackupAsync(CancellationToken cancellationToken)
    {
        var run = state.State.ActiveBackup!;
        var parent = ActivityContext.TryParse(run.TraceParent, null, out var context) ? context : default;
        using var activity = Telemetry.Source.StartActivity("backup.run", ActivityKind.Internal, parent);
        Tag(activity, run.RunId);
        using var slot = await TakeBackupSlotAsync(run, cancellationToken);
        if (slot is null || run.IsTerminal)
        {
            return;
        }

        try
        {
            if (run.Method == BackupMethod.Offline)
            {
                await new OfflineBackupWorkflow(BackupContext, run, new RunRecords(this, run), [CrashTest]).RunAsync(cancellationToken);
                if (run.Method == BackupMethod.Live)
                {
                    // The VM was started during the copy and the run went on live, with overlays: that ends the chain.
                    InvalidateIncrementalChain($"overlay backup {run.RunId} (the VM started during its offline copy)");
                }
            }

            if (run.IsBackupJob)
            {
                await RunBackupJobAsync(run, cancellationToken);
            }
            else if (!run.IsTerminal && run.Method == BackupMethod.Live)
            {
                await new LiveBackupWorkflow(BackupContext, run, new RunRecords(this, run), [CrashTest]).RunAsync(cancellationToken);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // The activation is going: the next one resumes the run from its persisted step.
            return;
        }

        activity?.SetTag("outcome", run.Step.ToString());
    }

    /// <summary>The services the workflow of this VM uses.</summary>
    private LiveBackupContext BackupContext => new(hypervisor, fence, backupOptions.Value, time, logger, Key.Host, Key.Vm, VmKey);

    /// <summary>Crash tests' kill points (Orchestrator:Backup:KillAt), observing the workflow's steps.</summary>
    private CrashTestObserver CrashTest => new(backupOptions.Value.KillAt, logger);

    /// <summary>The run's records as the workflow writes them: through this grain's state and its one write gate.</summary>
    private sealed class RunRecords(VirtualMachineGrain grain, BackupRunState run) : IBackupRunRecords
    {
        public void Add(BackupStep step, string? note) => grain.AddStep(run, step, note);

        public Task PersistAsync(BackupStep step, string? note, CancellationToken cancellationToken) => grain.PersistBackupAsync(run, step, note, cancellationToken);

        public Task PersistAsync(CancellationToken cancellationToken) => grain.PersistRunAsync(run, cancellationToken);

        public Task NoteLiveChangeAsync(CancellationToken cancellationToken) => grain.NoteLiveChangeAsync(run, cancellationToken);

        public void DisksChanged() => grain.TrackBackup();

        public Task FinishAsync(BackupStep outcome, CancellationToken cancellationToken) => grain.FinishBackupAsync(run, outcome, cancellationToken);
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
            var left = SeenDisks.Count(d => Path.GetFileName(d.SourcePath).Contains(".orch-", StringComparison.Ordinal));
            BackupGauges.Track(this, Key.Host, state.State.ActiveBackup, left);
        }
    }

    private void SignalBackupChanged()
    {
        var previous = _backupChanged;
        _backupChanged = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        previous.TrySetResult();
        if (state.State.ActiveBackup is null or { IsTerminal: true })
        {
            var ended = _backupEnded;
            _backupEnded = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            ended.TrySetResult();
        }
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
        LastTestOf(run.RunId),
        run.Level,
        run.ParentRunId is { } parent ? BackupRunKeys.Of(Key.Host, Key.Vm, parent) : null,
        run.LevelReason,
        run.Method);

    private void Tag(Activity? activity, string runId)
    {
        activity?.SetTag("host", Key.Host);
        activity?.SetTag("vm", Key.Vm);
        activity?.SetTag("run", runId);
    }

    private void DeleteBackupSet(BackupRunState run) => new BackupSet(run.BackupSetPath, backupOptions.Value).Delete(logger, VmKey);

    /// <summary>
    /// Prunes the finished run's policy's older sets by its retention (keep-last and daily/weekly/monthly), inside the
    /// history update that records the run: each pruned set is deleted and its run notes it.
    /// </summary>
    private void ApplyRetention(BackupRunState finished, int[] retention, List<BackupRunState> history)
    {
        if (retention.All(count => count <= 0))
        {
            // Refused at admission; a run persisted before that check must not prune everything either.
            LogRetentionIgnored(logger, VmKey, finished.RunId);
            return;
        }

        var candidates = history
            .Where(r => r.Step == BackupStep.Completed && r.Policy == finished.Policy && new BackupSet(r.BackupSetPath, backupOptions.Value).Exists)
            .ToList();
        // One retention rule set for checkpoints and backups: newest N plus the newest per day / ISO week / month.
        var prune = CheckpointSchedulePlanner.SelectForPruning(
                candidates.Select(r => new RetainedCheckpoint(r.RunId, r.StartedAt)),
                new RetentionPolicy(KeepLast: retention[0], Daily: retention[1], Weekly: retention[2], Monthly: retention[3]),
                TimeZoneInfo.Utc)
            .Select(c => c.Name)
            .ToHashSet(StringComparer.Ordinal);

        // An incremental set needs every set up its chain (its images are backed by them): none of those is pruned.
        var byId = history.GroupBy(r => r.RunId, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Last(), StringComparer.Ordinal);
        foreach (var kept in history.Where(r => !prune.Contains(r.RunId)))
        {
            for (var parent = kept.ParentRunId; parent is not null && prune.Remove(parent); parent = byId.GetValueOrDefault(parent)?.ParentRunId)
            {
            }
        }

        foreach (var run in candidates.Where(r => prune.Contains(r.RunId)))
        {
            DeleteBackupSet(run);
            run.Steps.Add(new BackupStepEntry { Step = BackupStep.Completed, At = time.GetUtcNow(), Note = $"pruned by retention after {finished.RunId}" });
            LogPruned(logger, VmKey, run.RunId);
        }
    }
}
