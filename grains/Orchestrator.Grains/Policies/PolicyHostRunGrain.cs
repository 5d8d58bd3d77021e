using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orchestrator.Grains.Backups;
using Orchestrator.Grains.Placement;
using Orchestrator.Grains.Storage;

namespace Orchestrator.Grains.Policies;

/// <summary>
/// One host's part of a policy run (key <c>host/policy</c>): a queue of waiting VMs and a running count. A VM starts
/// when another ends or the grant grows, never on a periodic rescan, and nothing fleet-wide is asked per VM: the part
/// runs at most <c>min(per_host, Granted - Returned)</c> VMs at once (live backups: and at most twice the silo's backup slots).
/// </summary>
/// <remarks>
/// <para>Budget: the coordinator (the policy grain) splits <c>concurrency.fleet</c> into per-host grants and keeps
/// <c>sum(Granted - Returned) &lt;= fleet</c> over the parts not done. Both totals are cumulative and only grow: the
/// coordinator persists a larger <c>Granted</c> before it tells the part, and this part persists a larger
/// <c>Returned</c> before it tells the coordinator, so the part's view of what it holds is never above the
/// coordinator's, whatever messages are lost, repeated or reordered. A part that dies keeps its grant counted by
/// the coordinator until it reports again (the coordinator's tick re-activates it elsewhere, and it recovers from
/// its state) or the run ends; a recovering part asks the coordinator for its grant and admits nothing before it
/// re-resolved every VM its state does not record as ended. So the fleet budget holds under the loss of any silo.
/// One VM never runs twice at once: its VM grain's operation lock answers Conflict, handled as busy and retried.</para>
/// <para>Writes: the VM list once at start, then at most one checkpoint per <see cref="PolicyOptions.CheckpointInterval"/>
/// when something changed (or budget is handed back), then the outcome once into the history. The durable record of a
/// VM's progress is the VM grain's own backup record, which carries the run id: on recovery a VM not recorded as ended
/// is looked up there (<see cref="FindOwnBackupAsync"/>) and followed, never backed up twice.</para>
/// </remarks>
[HostPreferredPlacement]
internal sealed partial class PolicyHostRunGrain(
    [PersistentState("policy-host-run", StorageNames.Default)] IPersistentState<PolicyHostRunState> state,
    [PersistentState("policy-host-runs", StorageNames.Default)] IPersistentState<PolicyHostRunHistoryState> history,
    IHostDirectory hostDirectory,
    IOptions<PolicyOptions> options,
    IOptions<BackupOptions> backupOptions,
    TimeProvider time,
    ILogger<PolicyHostRunGrain> logger) : Grain, IPolicyHostRunGrain
{
    private static readonly TimeSpan WaitSlice = TimeSpan.FromSeconds(20);
    private static readonly TimeSpan BusyBackoff = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan UnreachableBackoff = TimeSpan.FromSeconds(2);
    private const int RecoveryProbes = 32;

    private readonly StateWriteGate _stateWrites = new(() => state.WriteStateAsync());
    private readonly StateWriteGate _historyWrites = new(() => history.WriteStateAsync());
    private readonly Queue<PolicyTargetRecord> _queue = new();
    private int _running;
    private int _delayed;
    private static readonly TimeSpan HostMissingGrace = TimeSpan.FromSeconds(3);

    private bool _driving;
    private bool _pumpScheduled;
    private DateTimeOffset? _hostMissingSince;
    private bool _recovering;
    private bool _finishing;
    private bool _dirty;
    private CancellationTokenSource _cancellation = new();
    private IGrainTimer? _checkpointTimer;
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>This activation's identity for watchers' cursors (a change log does not outlive its activation).</summary>
    private readonly long _epoch = Random.Shared.NextInt64(1, long.MaxValue);
    private PolicyRunChangeLog? _log;

    private string Host => GrainKeys.HostOf(this.GetPrimaryKeyString());

    private string Policy => this.GetPrimaryKeyString()[(Host.Length + 1)..];

    private IPolicyRunCoordinator Coordinator => GrainFactory.GetGrain<IPolicyRunCoordinator>(Policy);

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        if (state.State.Active is { } run)
        {
            _log = new PolicyRunChangeLog(run);
            if (run.Done)
            {
                // The silo died between filing the outcome and clearing the active run.
                _finishing = true;
                _ = FileAsync(run);
            }
            else
            {
                Drive(run, recovered: true);
            }
        }

        return Task.CompletedTask;
    }

    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        await _cancellation.CancelAsync();
        _checkpointTimer?.Dispose();
        await Task.WhenAll(_stateWrites.DrainAsync(), _historyWrites.DrainAsync()).WaitAsync(cancellationToken).ContinueWith(_ => { }, TaskScheduler.Current);
    }

    public async Task<PolicyHostRunStatus> StartAsync(PolicyHostRunStart start, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(start);
        if (Find(start.RunId) is { } known)
        {
            return Status(known);
        }

        if (state.State.Active is { Done: false } older)
        {
            // The coordinator runs one run at a time: an older run still here was abandoned by it.
            await AbandonAsync(older, $"abandoned: run {start.RunId} started");
        }

        var run = new PolicyHostRunRecord
        {
            Policy = start.Policy,
            RunId = start.RunId,
            PolicyVersion = start.PolicyVersion,
            Spec = start.Spec,
            StartedAt = start.StartedAt,
            TraceParent = start.TraceParent,
            Targets = start.Targets,
            Granted = start.Granted,
            Version = NextVersion(0),
        };
        state.State.Active = run;
        _log = new PolicyRunChangeLog(run);
        await _stateWrites.WriteAsync(cancellationToken);
        LogPartStarted(logger, Policy, run.RunId, Host, run.Targets.Count, run.Granted);

        // Targets handed over already admitted (a run written by the code before parts) are re-resolved first.
        Drive(run, recovered: run.Targets.Any(t => t.Status == PolicyTargetStatus.Running));
        return Status(run);
    }

    public Task<PolicyHostRunStatus> SyncAsync(string runId, int granted, CancellationToken cancellationToken = default)
    {
        if (Find(runId) is not { } run)
        {
            return Task.FromResult(PolicyHostRunStatus.Unknown(runId));
        }

        if (!run.Done && granted > run.Granted)
        {
            run.Granted = granted;
            _dirty = true;
            Pump(run);
        }

        return Task.FromResult(Status(run));
    }

    public Task<IReadOnlyList<PolicyHostRunTargets>> GetTargetsAsync(IReadOnlyList<string> runIds, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(runIds);
        var result = new List<PolicyHostRunTargets>();
        foreach (var runId in runIds.Distinct(StringComparer.Ordinal))
        {
            if (Find(runId) is { } run)
            {
                result.Add(new PolicyHostRunTargets(run.RunId, [.. run.Targets.Select(View)], run.Version));
            }
        }

        return Task.FromResult<IReadOnlyList<PolicyHostRunTargets>>(result);
    }

    public async Task<long> WaitChangeAsync(string runId, long afterVersion, TimeSpan maxWait, CancellationToken cancellationToken = default)
    {
        var deadline = time.GetUtcNow() + maxWait;
        while (true)
        {
            if (Find(runId) is not { } run)
            {
                return -1;
            }

            var remaining = deadline - time.GetUtcNow();
            if (run.Version > afterVersion || run.Done || remaining <= TimeSpan.Zero)
            {
                return run.Version;
            }

            try
            {
                await _changed.Task.WaitAsync(remaining, time, cancellationToken);
            }
            catch (TimeoutException)
            {
            }
        }
    }

    public Task<PolicyHostRunChanges?> GetChangesAsync(string runId, long epoch, long sinceVersion, CancellationToken cancellationToken = default)
    {
        if (Find(runId) is not { } run)
        {
            return Task.FromResult<PolicyHostRunChanges?>(null);
        }

        var log = _log is { } l && ReferenceEquals(l.Run, run) ? l : null;
        var changed = epoch == _epoch ? log?.Since(sinceVersion) : null;
        var result = changed is null
            ? new PolicyHostRunChanges(run.RunId, _epoch, run.Version, Full: true, run.Done, [.. run.Targets.Select(View)], log?.Counts ?? PolicyRunCounts.Of(run.Targets.Select(t => t.Status)))
            : new PolicyHostRunChanges(run.RunId, _epoch, run.Version, Full: false, run.Done, [.. changed.Select(View)], log!.Counts);
        return Task.FromResult<PolicyHostRunChanges?>(result);
    }

    public async Task WaitChangeSinceAsync(string runId, long epoch, long afterVersion, TimeSpan maxWait, CancellationToken cancellationToken = default)
    {
        var deadline = time.GetUtcNow() + maxWait;
        while (Find(runId) is { } run && epoch == _epoch && run.Version <= afterVersion && !run.Done)
        {
            var remaining = deadline - time.GetUtcNow();
            if (remaining <= TimeSpan.Zero)
            {
                return;
            }

            try
            {
                await _changed.Task.WaitAsync(remaining, time, cancellationToken);
            }
            catch (TimeoutException)
            {
            }
        }
    }

    public async Task ClearAsync(CancellationToken cancellationToken = default)
    {
        if (state.State.Active is { Done: false } active)
        {
            throw new OrchestratorException(ErrorCode.Conflict, $"policy '{Policy}' has run {active.RunId} in progress on host {Host}");
        }

        await _historyWrites.RunAloneAsync(() => history.ClearStateAsync());
        history.State = new PolicyHostRunHistoryState();
        await _stateWrites.RunAloneAsync(() => state.ClearStateAsync());
        state.State = new PolicyHostRunState();
        DeactivateOnIdle();
    }

    private PolicyHostRunRecord? Find(string runId) =>
        state.State.Active is { } active && active.RunId == runId ? active : history.State.Runs.FirstOrDefault(r => r.RunId == runId);

    private PolicyHostRunStatus Status(PolicyHostRunRecord run) => new(
        run.RunId,
        Known: true,
        run.Done,
        run.Returned,
        Waiting: run.Done ? 0 : _queue.Count + _delayed,
        run.Targets.Count(t => t.Status == PolicyTargetStatus.Succeeded),
        run.Targets.Count(t => t.Status == PolicyTargetStatus.Failed),
        run.Targets.Count(t => t.Status == PolicyTargetStatus.Skipped),
        run.Done
            ? [.. run.Targets
                .Where(t => t.Status == PolicyTargetStatus.Skipped && t.RetryWhenBack)
                .Select(t => new PendingRetryRecord { Host = t.Host, Vm = t.Vm, FromRun = run.RunId, BackupRun = t.BackupRun ?? t.CarriedBackupRun })]
            : [],
        run.Version);

    private static PolicyTargetView View(PolicyTargetRecord t) =>
        new(t.Host, t.Vm, t.Status, t.BackupRun, t.Checkpoint, t.Reason, t.AdmittedAt, t.ReleasedAt, t.Attempts);

    /// <summary>Ticks of now, and always above the previous version: versions grow across activations too.</summary>
    private long NextVersion(long previous) => Math.Max(previous + 1, time.GetUtcNow().UtcTicks);

    /// <summary>A target (or the part itself, <paramref name="target"/> null) changed: watchers wake, the next checkpoint writes it.</summary>
    private void Changed(PolicyHostRunRecord run, PolicyTargetRecord? target)
    {
        run.Version = NextVersion(run.Version);
        if (target is not null && _log is { } log && ReferenceEquals(log.Run, run))
        {
            log.Record(target, run.Version);
        }

        _dirty = true;
        var previous = _changed;
        _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        previous.TrySetResult();
    }

    private void Drive(PolicyHostRunRecord run, bool recovered)
    {
        _driving = true;
        this.DelayDeactivation(TimeSpan.FromHours(12));
        _checkpointTimer ??= this.RegisterGrainTimer(
            static (grain, ct) => grain.CheckpointAsync(ct),
            this,
            new GrainTimerCreationOptions(options.Value.CheckpointInterval, options.Value.CheckpointInterval) { Interleave = true, KeepAlive = true });
        if (recovered)
        {
            _recovering = true;
            _ = RecoverAsync(run);
            return;
        }

        foreach (var target in run.Targets.Where(t => !t.IsTerminal))
        {
            _queue.Enqueue(target);
        }

        Pump(run);
    }

    /// <summary>
    /// A part resumed from its state: the grant is asked from the coordinator (it may have grown), and every VM not
    /// recorded as ended is looked up on its VM grain before anything new is admitted (a VM started after the last
    /// checkpoint is found there by the run id its backup carries).
    /// </summary>
    private async Task RecoverAsync(PolicyHostRunRecord run)
    {
        try
        {
            await ResolveOpenTargetsAsync(run, _cancellation.Token);
        }
        catch (Exception) when (_cancellation.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            // Never left half-recovered: the next activation (the coordinator's next sync) starts over.
            LogCheckpointFailed(logger, Policy, run.RunId, Host, e.Message);
            DeactivateOnIdle();
        }
    }

    private async Task ResolveOpenTargetsAsync(PolicyHostRunRecord run, CancellationToken cancellationToken)
    {
        LogPartRecovering(logger, Policy, run.RunId, Host);
        try
        {
            run.Granted = Math.Max(run.Granted, await Coordinator.GetGrantAsync(Host, run.RunId, cancellationToken));
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // The persisted grant is never above the coordinator's: admit under it until a Sync brings more.
            LogCoordinatorUnreachable(logger, Policy, run.RunId, Host, e.Message);
        }

        var open = run.Targets.Where(t => !t.IsTerminal).ToList();
        if (run.Spec.Kind == PolicyKind.LiveBackup)
        {
            using var probes = new SemaphoreSlim(RecoveryProbes);
            await Task.WhenAll(open.Select(async target =>
            {
                await probes.WaitAsync(cancellationToken);
                try
                {
                    await ReResolveAsync(run, target, cancellationToken);
                }
                finally
                {
                    probes.Release();
                }
            }));
        }
        else
        {
            open.ForEach(t => Requeue(t, time.GetUtcNow()));
        }

        if (cancellationToken.IsCancellationRequested)
        {
            return;
        }

        _recovering = false;
        foreach (var target in open)
        {
            Changed(run, target);
        }

        Changed(run, null);
        Pump(run);
    }

    /// <summary>Finds what became of one VM of a resumed run: still running (followed), ended, or not started (queued).</summary>
    private async Task ReResolveAsync(PolicyHostRunRecord run, PolicyTargetRecord target, CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow();
        try
        {
            var vm = GrainFactory.GetGrain<IVirtualMachineGrain>(target.Key);
            var own = target.BackupRun ?? await FindOwnBackupAsync(run, target, vm, cancellationToken);
            if (own is null)
            {
                Requeue(target, now);
                return;
            }

            target.BackupRun = own;
            target.AdmittedAt ??= now;
            target.ReleasedAt = null;
            target.Status = PolicyTargetStatus.Running;
            _running++;
            _ = RunTargetAsync(run, target, resumed: true);
        }
        catch (Exception) when (cancellationToken.IsCancellationRequested)
        {
        }
        catch (OrchestratorException e) when (e.Code == ErrorCode.HostUnavailable)
        {
            Skip(run, target, $"{e.Message}; retried when it is back", retry: true);
        }
        catch (OrchestratorException e) when (e.Code == ErrorCode.NotFound)
        {
            Skip(run, target, $"VM gone: {e.Message}", retry: false);
        }
        catch (Exception e)
        {
            EndTarget(run, target, PolicyTargetStatus.Failed, e.Message);
        }
    }

    private void Requeue(PolicyTargetRecord target, DateTimeOffset now)
    {
        if (target.Status == PolicyTargetStatus.Running)
        {
            target.Status = PolicyTargetStatus.Pending;
            target.ReleasedAt = now;
        }

        _queue.Enqueue(target);
    }

    private int Limit(PolicyHostRunRecord run) => Math.Min(Math.Min(run.Spec.PerHost, run.Granted - run.Returned), InFlightCap(run));

    /// <summary>
    /// Live backups admitted at once by one part: at most twice the silo's backup slots
    /// (<see cref="BackupOptions.MaxConcurrentPerSilo"/>), whatever the budget. More could not run sooner (the slots
    /// bound them), and each one admitted beyond that waited in memory at step Queued with its run, its calls and its
    /// timers: at 3,334 VMs per host with budgets wide open, thousands at once (issue 11: memory and CPU per backup).
    /// Twice, so a run is always queued to take a slot the moment one frees. Admitting fewer never exceeds a budget.
    /// </summary>
    private int InFlightCap(PolicyHostRunRecord run) =>
        run.Spec.Kind == PolicyKind.LiveBackup ? 2 * Math.Max(1, backupOptions.Value.MaxConcurrentPerSilo) : int.MaxValue;

    /// <summary>Admits waiting VMs while the part's limit allows; O(1) per VM admitted. Ends the part when nothing is left.</summary>
    private void Pump(PolicyHostRunRecord run)
    {
        if (!_driving || _recovering || _finishing || run.Done || _cancellation.IsCancellationRequested || !ReferenceEquals(state.State.Active, run))
        {
            return;
        }

        if (_queue.Count > 0 && hostDirectory.FindSilo(Host) is null)
        {
            // This silo's view of the cluster may lag a moment behind (a host's silo that just joined): look again
            // for a short grace before the waiting VMs are skipped.
            var now = time.GetUtcNow();
            _hostMissingSince ??= now;
            if (now - _hostMissingSince.Value < HostMissingGrace)
            {
                _ = PumpLaterAsync(run);
                return;
            }

            while (_queue.TryDequeue(out var target))
            {
                Skip(run, target, $"host unavailable: no live silo serves host '{Host}'; retried when it is back", retry: true);
            }
        }
        else
        {
            _hostMissingSince = null;
        }

        while (_running < Limit(run) && _queue.TryDequeue(out var target))
        {
            target.Status = PolicyTargetStatus.Running;
            target.AdmittedAt = time.GetUtcNow();
            target.ReleasedAt = null;
            target.Reason = null;
            target.Attempts++;
            PolicyMetrics.RecordAdmitted(Policy, run.StartedAt, target);
            _running++;
            Changed(run, target);
            _ = RunTargetAsync(run, target, resumed: false);
        }

        if (_running == 0 && _queue.Count == 0 && _delayed == 0)
        {
            _finishing = true;
            _ = FinishAsync(run);
        }
    }

    private async Task PumpLaterAsync(PolicyHostRunRecord run)
    {
        if (_pumpScheduled)
        {
            return;
        }

        _pumpScheduled = true;
        try
        {
            await Task.Delay(TimeSpan.FromMilliseconds(250), time, _cancellation.Token);
        }
        catch (OperationCanceledException)
        {
            return;
        }
        finally
        {
            _pumpScheduled = false;
        }

        Pump(run);
    }

    private async Task RunTargetAsync(PolicyHostRunRecord run, PolicyTargetRecord target, bool resumed)
    {
        var busy = await DispatchAsync(run, target, resumed, _cancellation.Token);
        if (!ReferenceEquals(state.State.Active, run) || run.Done || _cancellation.IsCancellationRequested)
        {
            // Abandoned or deactivating: the counts belong to nobody now.
            return;
        }

        _running--;

        if (busy)
        {
            _delayed++;
            _ = RequeueLaterAsync(run, target);
        }

        Pump(run);
    }

    private async Task RequeueLaterAsync(PolicyHostRunRecord run, PolicyTargetRecord target)
    {
        try
        {
            await Task.Delay(BusyBackoff, time, _cancellation.Token);
        }
        catch (OperationCanceledException)
        {
            return;
        }

        if (!ReferenceEquals(state.State.Active, run) || run.Done)
        {
            return;
        }

        _delayed--;
        _queue.Enqueue(target);
        Pump(run);
    }

    /// <summary>
    /// The policy's test_restore after a completed backup: the VM grain starts a test when it is due and runs it in the
    /// background (one per VM; the host's test slots bound how many boot at once). A test that cannot start is noted,
    /// never a failure of the backup.
    /// </summary>
    private async Task<string?> StartTestRestoreIfDueAsync(IVirtualMachineGrain vm, string backupRun, TestRestoreSpec test, CancellationToken cancellationToken)
    {
        try
        {
            var started = await vm.TestRestoreIfDueAsync(backupRun, test, Policy, cancellationToken);
            return started is null ? null : $"test restore {started.Id} started";
        }
        catch (OrchestratorException e)
        {
            return $"test restore not started: {e.Message}";
        }
    }

    private static string? JoinNotes(string? a, string? b) => a is null ? b : b is null ? a : $"{a}; {b}";

    /// <summary>Runs one admitted VM's workflow on its host and records the outcome; true when the VM was busy (to retry).</summary>
    private async Task<bool> DispatchAsync(PolicyHostRunRecord run, PolicyTargetRecord target, bool resumed, CancellationToken cancellationToken)
    {
        await Task.Yield();
        var parent = ActivityContext.TryParse(run.TraceParent, null, out var context) ? context : default;
        using var activity = Telemetry.Source.StartActivity("policy.target", ActivityKind.Internal, parent);
        activity?.SetTag("policy", Policy);
        activity?.SetTag("run", run.RunId);
        activity?.SetTag("host", target.Host);
        activity?.SetTag("vm", target.Vm);
        try
        {
            var vm = GrainFactory.GetGrain<IVirtualMachineGrain>(target.Key);
            if (run.Spec.Kind == PolicyKind.Checkpoint)
            {
                var result = await vm.CreatePolicyCheckpointAsync(
                    new PolicyCheckpointRequest(Policy, run.PolicyVersion, run.RunId, run.Spec.RetentionContract(), run.StartedAt),
                    cancellationToken);
                target.Checkpoint = result.Checkpoint.Name;
                activity?.SetTag("checkpoint", target.Checkpoint);
                EndTarget(run, target, PolicyTargetStatus.Succeeded, result.Pruned.Count > 0 ? $"pruned {string.Join(", ", result.Pruned)}" : null);
                return false;
            }

            var outcome = await BackUpAsync(run, target, vm, resumed, cancellationToken);
            activity?.SetTag("backup_run", target.BackupRun);
            var note = outcome.Note;
            if (outcome.Step == BackupStep.Completed && target.BackupRun is { Length: > 0 } backupRun && run.Spec.TestRestoreContract() is { } test)
            {
                note = JoinNotes(note, await StartTestRestoreIfDueAsync(vm, backupRun, test, cancellationToken));
            }

            EndTarget(run, target, outcome.Step == BackupStep.Completed ? PolicyTargetStatus.Succeeded : PolicyTargetStatus.Failed, note);
            return false;
        }
        catch (Exception) when (cancellationToken.IsCancellationRequested)
        {
            // Deactivation cut the call short: nothing is recorded, the resumed part finds the VM's state again.
            return false;
        }
        catch (OrchestratorException e) when (e.Code == ErrorCode.Conflict)
        {
            // The VM is busy with another operation (a manual backup, another policy): wait and try again.
            var now = time.GetUtcNow();
            target.BusySince ??= now;
            if (now - target.BusySince.Value > options.Value.BusyWait)
            {
                activity?.SetStatus(ActivityStatusCode.Error, e.Message);
                EndTarget(run, target, PolicyTargetStatus.Failed, $"busy for more than {options.Value.BusyWait}: {e.Message}");
                return false;
            }

            target.Status = PolicyTargetStatus.Pending;
            target.ReleasedAt = now;
            target.NotBefore = now + BusyBackoff;
            target.Reason = $"busy: {e.Message}";
            Changed(run, target);
            return true;
        }
        catch (OrchestratorException e) when (e.Code == ErrorCode.HostUnavailable)
        {
            activity?.SetStatus(ActivityStatusCode.Error, e.Message);
            Skip(run, target, $"{e.Message}; retried when it is back", retry: true);
            return false;
        }
        catch (OrchestratorException e) when (e.Code == ErrorCode.NotFound)
        {
            activity?.SetStatus(ActivityStatusCode.Error, e.Message);
            Skip(run, target, $"VM gone: {e.Message}", retry: false);
            return false;
        }
        catch (Exception e)
        {
            activity?.SetStatus(ActivityStatusCode.Error, e.Message);
            EndTarget(run, target, PolicyTargetStatus.Failed, e.Message);
            return false;
        }
    }

    private sealed record BackupOutcome(BackupStep Step, string? Note);

    private async Task<BackupOutcome> BackUpAsync(PolicyHostRunRecord run, PolicyTargetRecord target, IVirtualMachineGrain vm, bool resumed, CancellationToken cancellationToken)
    {
        if (target.CarriedBackupRun is { } carried)
        {
            // Its host died mid-backup in an earlier run: recovery there finishes or rolls that backup back first.
            var earlier = await TryWaitAsync(target, vm, carried, cancellationToken);
            target.CarriedBackupRun = null;
            if (earlier is { Step: BackupStep.Completed })
            {
                target.BackupRun = earlier.RunKey;
                return new BackupOutcome(BackupStep.Completed, $"backup {earlier.RunKey} was finished by recovery when the host came back");
            }
        }

        if (target.BackupRun is null)
        {
            // After a restart (or a lost answer, or a busy retry) the VM may have started this run's backup already: never start two.
            target.BackupRun = await FindOwnBackupAsync(run, target, vm, cancellationToken);
            if (target.BackupRun is not null)
            {
                LogBackupAdopted(logger, Policy, run.RunId, target.BackupRun, resumed);
            }
        }

        if (target.BackupRun is null)
        {
            var retention = run.Spec.RetentionContract();
            var request = new BackupRequest
            {
                Target = run.Spec.Target is { } template ? PolicyValidator.RenderTarget(template, Policy, target.Host, target.Vm) : null,
                Quiesce = run.Spec.Quiesce,
                Verify = run.Spec.Verify,
                BandwidthBytesPerSecond = run.Spec.BandwidthBytesPerSecond,
                Retention = new BackupRetention(retention.KeepLast, retention.Daily, retention.Weekly, retention.Monthly),
                Policy = Policy,
                PolicyVersion = run.PolicyVersion,
                PolicyRun = run.RunId,
                Incremental = run.Spec.Level == BackupLevel.Auto,
                FullEveryRuns = run.Spec.Level == BackupLevel.Auto ? run.Spec.FullEveryRuns : 0,
                FullEveryAge = run.Spec.Level == BackupLevel.Auto ? run.Spec.FullEvery : null,
            };
            try
            {
                var started = await vm.StartBackupAsync(request, cancellationToken);
                target.BackupRun = started.RunKey;
            }
            catch (Exception e) when (e is not OrchestratorException and not OperationCanceledException)
            {
                // The answer was lost: the backup may or may not have been admitted there.
                target.BackupRun = await FindOwnBackupAsync(run, target, vm, cancellationToken)
                    ?? throw (hostDirectory.FindSilo(target.Host) is null ? OrchestratorException.HostUnavailable(target.Host) : e);
            }

            Changed(run, target);
        }

        var runKey = target.BackupRun;
        var final = await TryWaitAsync(target, vm, runKey, cancellationToken)
            ?? throw OrchestratorException.NotFound($"backup {runKey} is no longer in the history of VM '{target.Key}'");
        return new BackupOutcome(final.Step, final.Step == BackupStep.Completed ? null : final.Error ?? "the backup failed");
    }

    /// <summary>This run's backup on the VM (the durable per-VM record: it carries the run id), or null.</summary>
    private async Task<string?> FindOwnBackupAsync(PolicyHostRunRecord run, PolicyTargetRecord target, IVirtualMachineGrain vm, CancellationToken cancellationToken)
    {
        var runs = await CallVmAsync(target, () => vm.ListBackupsAsync(cancellationToken), cancellationToken);
        return runs.FirstOrDefault(r => r.PolicyRun == run.RunId)?.RunKey;
    }

    /// <summary>Follows a VM's backup until it ends; null when the VM does not know that run.</summary>
    private async Task<BackupRunView?> TryWaitAsync(PolicyTargetRecord target, IVirtualMachineGrain vm, string runKey, CancellationToken cancellationToken)
    {
        var runId = BackupRunKeys.Parse(runKey).RunId;
        while (true)
        {
            BackupRunView view;
            try
            {
                // Only the end matters here: one call per backup (and per slice), not one per change of the run.
                view = await CallVmAsync(target, () => vm.WaitBackupEndAsync(runId, WaitSlice, cancellationToken), cancellationToken);
            }
            catch (OrchestratorException e) when (e.Code == ErrorCode.NotFound)
            {
                return null;
            }

            if (view.IsTerminal)
            {
                return view;
            }
        }
    }

    /// <summary>
    /// An idempotent call to a VM grain. Transport failures are retried while the host's silo still counts as alive
    /// (it may be restarting or just declared dead), for at most the unreachable grace; once no live silo serves the
    /// host it is HostUnavailable.
    /// </summary>
    private async Task<T> CallVmAsync<T>(PolicyTargetRecord target, Func<Task<T>> call, CancellationToken cancellationToken)
    {
        var since = time.GetUtcNow();
        while (true)
        {
            try
            {
                return await call();
            }
            catch (Exception e) when (e is not OrchestratorException and not OperationCanceledException)
            {
                if (hostDirectory.FindSilo(target.Host) is null)
                {
                    throw OrchestratorException.HostUnavailable(target.Host);
                }

                if (time.GetUtcNow() - since > options.Value.UnreachableGrace)
                {
                    throw;
                }

                LogVmUnreachable(logger, Policy, target.Key, e.Message);
                await Task.Delay(UnreachableBackoff, time, cancellationToken);
            }
        }
    }

    private void Skip(PolicyHostRunRecord run, PolicyTargetRecord target, string reason, bool retry)
    {
        PolicyMetrics.RecordTargetEnded(Policy, run.Spec.Kind, target, PolicyTargetStatus.Skipped);
        target.Status = PolicyTargetStatus.Skipped;
        target.Reason = reason;
        target.RetryWhenBack = retry;
        if (target.AdmittedAt is not null && target.ReleasedAt is null)
        {
            target.ReleasedAt = time.GetUtcNow();
        }

        Changed(run, target);
        LogTargetSkipped(logger, Policy, run.RunId, target.Key, reason);
    }

    private void EndTarget(PolicyHostRunRecord run, PolicyTargetRecord target, PolicyTargetStatus status, string? reason)
    {
        PolicyMetrics.RecordTargetEnded(Policy, run.Spec.Kind, target, status);
        target.Status = status;
        target.Reason = reason;
        target.ReleasedAt = time.GetUtcNow();
        Changed(run, target);
        LogTargetEnded(logger, Policy, run.RunId, target.Key, status, reason ?? "-");
    }

    /// <summary>
    /// The throttled checkpoint: budget the part can no longer use is handed back (persisted first, then told), and
    /// the VMs' progress is written when it changed. At most one write per interval.
    /// </summary>
    private async Task CheckpointAsync(CancellationToken cancellationToken)
    {
        if (state.State.Active is not { Done: false } run || _finishing || _recovering)
        {
            return;
        }

        var held = run.Granted - run.Returned;
        var need = Math.Min(run.Spec.PerHost, _running + _queue.Count + _delayed);
        var excess = held - Math.Max(need, _running);
        if (excess > 0)
        {
            run.Returned += excess;
            _dirty = true;
        }

        if (!_dirty)
        {
            return;
        }

        _dirty = false;
        try
        {
            await _stateWrites.WriteAsync(cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _dirty = true;
            LogCheckpointFailed(logger, Policy, run.RunId, Host, e.Message);
            return;
        }

        if (excess > 0)
        {
            await ReportAsync(run, cancellationToken);
        }
    }

    /// <summary>Tells the coordinator where the part stands; a lost report is picked up by the coordinator's next Sync.</summary>
    private async Task ReportAsync(PolicyHostRunRecord run, CancellationToken cancellationToken)
    {
        try
        {
            await Coordinator.ReportPartAsync(Host, Status(run), cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            LogCoordinatorUnreachable(logger, Policy, run.RunId, Host, e.Message);
        }
    }

    /// <summary>Every VM ended: the whole grant goes back, the outcome is filed once, the coordinator is told.</summary>
    private async Task FinishAsync(PolicyHostRunRecord run)
    {
        run.Returned = Math.Max(run.Returned, run.Granted);
        run.EndedAt = time.GetUtcNow();
        Changed(run, null);
        await FileAsync(run);
    }

    private async Task FileAsync(PolicyHostRunRecord run)
    {
        try
        {
            if (!history.State.Runs.Any(r => r.RunId == run.RunId))
            {
                history.State.Runs.Add(run);
                var limit = Math.Max(1, options.Value.RunHistoryLimit);
                if (history.State.Runs.Count > limit)
                {
                    history.State.Runs.RemoveRange(0, history.State.Runs.Count - limit);
                }

                await _historyWrites.WriteAsync();
            }

            if (ReferenceEquals(state.State.Active, run))
            {
                state.State.Active = null;
                await _stateWrites.WriteAsync();
            }
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // Storage trouble: the activation goes; the next one (the coordinator's Sync) files it again.
            LogCheckpointFailed(logger, Policy, run.RunId, Host, e.Message);
            DeactivateOnIdle();
            return;
        }
        finally
        {
            _finishing = false;
        }

        _checkpointTimer?.Dispose();
        _checkpointTimer = null;
        LogPartFinished(logger, Policy, run.RunId, Host, Status(run).Succeeded, run.Targets.Count);
        await ReportAsync(run, CancellationToken.None);
    }

    private async Task AbandonAsync(PolicyHostRunRecord run, string reason)
    {
        await _cancellation.CancelAsync();
        _cancellation.Dispose();
        _cancellation = new CancellationTokenSource();
        _queue.Clear();
        _running = 0;
        _delayed = 0;
        _recovering = false;
        foreach (var target in run.Targets.Where(t => !t.IsTerminal))
        {
            EndTarget(run, target, PolicyTargetStatus.Failed, reason);
        }

        run.Returned = Math.Max(run.Returned, run.Granted);
        run.EndedAt = time.GetUtcNow();
        await FileAsync(run);
    }
}
