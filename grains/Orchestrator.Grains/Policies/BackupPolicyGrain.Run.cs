using System.Diagnostics;

namespace Orchestrator.Grains.Policies;

/// <summary>
/// A policy run, top to bottom: resolve the targets from the fleet's VM index, then until every target ended:
/// skip the VMs whose host has no live silo (they wait in PendingRetries), admit waiting VMs under the per-host and
/// fleet budgets (slots held by the fleet grain), dispatch each admitted VM to its VM grain on its own host, and
/// record its outcome and release its slot. Every change is persisted before the next step, so a new activation
/// resumes the run: a VM that was running is looked up by the run id its backup carries, never started twice.
/// </summary>
internal sealed partial class BackupPolicyGrain
{
    private static readonly TimeSpan WaitSlice = TimeSpan.FromSeconds(20);
    private static readonly TimeSpan BusyBackoff = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan UnreachableBackoff = TimeSpan.FromSeconds(2);

    private Task? _runTask;
    private CancellationTokenSource? _runCancellation;
    private TaskCompletionSource _runChanged = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private async Task<PolicyRunRecord> StartRunAsync(PolicyRunTrigger trigger, CancellationToken cancellationToken)
    {
        var s = state.State;
        if (s.ActiveRun is { IsTerminal: true } previous)
        {
            // The previous run ended a moment ago and its task is still filing it.
            await ArchiveRunAsync(previous, cancellationToken);
        }

        var now = time.GetUtcNow();
        var run = new PolicyRunRecord
        {
            RunId = $"p-{now:yyyyMMdd-HHmmss}-{Guid.NewGuid().ToString("N")[..6]}",
            PolicyVersion = s.Version,
            Spec = s.Spec,
            Trigger = trigger,
            State = PolicyRunState.Running,
            StartedAt = now,
        };
        using var activity = Telemetry.Source.StartActivity("policy.admit");
        activity?.SetTag("policy", Name);
        activity?.SetTag("run", run.RunId);
        activity?.SetTag("trigger", trigger.ToString().ToLowerInvariant());
        run.TraceParent = activity?.Id ?? Activity.Current?.Id;

        if (trigger == PolicyRunTrigger.Retry)
        {
            // The VMs whose host is back; the others keep waiting.
            var served = hostDirectory.ServedHosts();
            var ready = s.PendingRetries.Where(p => served.ContainsKey(p.Host)).ToList();
            run.RetryOf = ready.Select(p => p.FromRun).Order(StringComparer.Ordinal).FirstOrDefault();
            run.Targets = [.. ready.Select(p => new PolicyTargetRecord { Host = p.Host, Vm = p.Vm, CarriedBackupRun = p.BackupRun })];
            s.PendingRetries.RemoveAll(p => ready.Contains(p));
        }
        else
        {
            var selected = await Fleet.SelectAsync(run.Spec.ToContract().Selector, cancellationToken);
            run.Targets = [.. selected.Select(vm => new PolicyTargetRecord { Host = vm.Host, Vm = vm.Name })];
        }

        if (run.Targets.Count == 0)
        {
            run.State = PolicyRunState.Failed;
            run.EndedAt = now;
            run.Error = "the selector matches no VM in the fleet's inventory (see: orchestrator vm list)";
        }

        run.Version++;
        if (run.IsTerminal)
        {
            PolicyMetrics.RecordRunEnded(Name, run);
            history.State.Runs.Add(run);
            TrimHistory();
            RefuseWritesWhileDeactivating();
            await _historyWrites.WriteAsync(cancellationToken);
        }
        else
        {
            s.ActiveRun = run;
        }

        await WriteAsync(cancellationToken);
        activity?.SetTag("targets", run.Targets.Count);
        LogRunStarted(logger, Name, run.RunId, trigger, run.Targets.Count);
        if (!run.IsTerminal)
        {
            StartRunTask();
        }

        SignalRunChanged();
        return run;
    }

    private void StartRunTask()
    {
        _runCancellation ??= new CancellationTokenSource();
        _runTask = RunLoopAsync(ActiveRun()!, _runCancellation.Token);
        this.DelayDeactivation(TimeSpan.FromHours(12));
    }

    private async Task StopRunTaskAsync(CancellationToken cancellationToken)
    {
        if (_runCancellation is { } cts)
        {
            await cts.CancelAsync();
            if (_runTask is { } task)
            {
                await task.WaitAsync(cancellationToken).ContinueWith(_ => { }, TaskScheduler.Current);
            }

            cts.Dispose();
            _runCancellation = null;
        }
    }

    private async Task RunLoopAsync(PolicyRunRecord run, CancellationToken cancellationToken)
    {
        var parent = ActivityContext.TryParse(run.TraceParent, null, out var context) ? context : default;
        using var activity = Telemetry.Source.StartActivity("policy.run", ActivityKind.Internal, parent);
        activity?.SetTag("policy", Name);
        activity?.SetTag("policy.version", run.PolicyVersion);
        activity?.SetTag("run", run.RunId);
        activity?.SetTag("kind", KindName(run.Spec.Kind));
        var inflight = new Dictionary<string, Task>(StringComparer.Ordinal);
        try
        {
            // Resumed run: VMs admitted before the restart are followed (or found) again, never started twice.
            foreach (var target in run.Targets.Where(t => t.Status == PolicyTargetStatus.Running))
            {
                inflight[target.Key] = DispatchAsync(run, target, resumed: true, cancellationToken);
            }

            while (!cancellationToken.IsCancellationRequested)
            {
                try
                {
                    await AdmitAsync(run, inflight, cancellationToken);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    // The fleet grain or storage is unreachable for a moment (e.g. its silo just died): keep the
                    // dispatched VMs going and try admission again on the next turn.
                    LogAdmissionFailed(logger, Name, run.RunId, e.Message);
                }
                foreach (var done in inflight.Where(i => i.Value.IsCompleted).Select(i => i.Key).ToList())
                {
                    inflight.Remove(done);
                }

                if (inflight.Count == 0 && run.Targets.All(t => t.IsTerminal))
                {
                    break;
                }

                var wake = Task.Delay(options.Value.AdmissionInterval, time, cancellationToken);
                await Task.WhenAny(inflight.Values.Append(wake));
            }

            if (cancellationToken.IsCancellationRequested)
            {
                return;
            }

            await FinishRunAsync(run, cancellationToken);
            activity?.SetTag("outcome", run.State.ToString().ToLowerInvariant());
            activity?.SetTag("succeeded", run.Targets.Count(t => t.Status == PolicyTargetStatus.Succeeded));
            activity?.SetTag("failed", run.Targets.Count(t => t.Status == PolicyTargetStatus.Failed));
            activity?.SetTag("skipped", run.Targets.Count(t => t.Status == PolicyTargetStatus.Skipped));
            if (run.State != PolicyRunState.Completed)
            {
                activity?.SetStatus(ActivityStatusCode.Error, run.Error);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Deactivation: the persisted run is resumed by the next activation.
        }
        catch (Exception e)
        {
            // Storage or fleet trouble: the tick resumes the run from what was persisted.
            activity?.SetStatus(ActivityStatusCode.Error, e.Message);
            LogRunLoopFailed(logger, Name, run.RunId, e.Message);
        }
    }

    /// <summary>Skips VMs of hosts without a live silo and admits waiting VMs while the budgets allow.</summary>
    private async Task AdmitAsync(PolicyRunRecord run, Dictionary<string, Task> inflight, CancellationToken cancellationToken)
    {
        var served = hostDirectory.ServedHosts();
        var now = time.GetUtcNow();
        var changed = false;

        // Round-robin over hosts so one big host does not take every fleet slot first.
        var waiting = run.Targets
            .Where(t => t.Status == PolicyTargetStatus.Pending)
            .GroupBy(t => t.Host, StringComparer.Ordinal)
            .SelectMany(g => g.Select((t, i) => (Target: t, Rank: i)))
            .OrderBy(x => x.Rank)
            .Select(x => x.Target)
            .ToList();
        foreach (var target in waiting)
        {
            if (!served.ContainsKey(target.Host))
            {
                Skip(run, target, $"host unavailable: no live silo serves host '{target.Host}'; retried when it is back", retry: true);
                changed = true;
                continue;
            }

            if (target.NotBefore is { } notBefore && notBefore > now)
            {
                continue;
            }

            var holding = run.Targets.Where(t => t.Status == PolicyTargetStatus.Running).Select(t => t.Key).ToList();
            var admission = await Fleet.TryAdmitAsync(
                new AdmissionRequest(Name, run.RunId, target.Host, target.Vm, new PolicyConcurrency(run.Spec.PerHost, run.Spec.Fleet), holding),
                cancellationToken);
            if (!admission.Granted)
            {
                if (target.Reason != admission.Reason)
                {
                    target.Reason = admission.Reason;
                    changed = true;
                }

                continue;
            }

            target.Status = PolicyTargetStatus.Running;
            target.AdmittedAt = time.GetUtcNow();
            target.ReleasedAt = null;
            target.Reason = null;
            target.Attempts++;
            PolicyMetrics.RecordAdmitted(Name, run, target);
            changed = true;
            inflight[target.Key] = DispatchAsync(run, target, resumed: false, cancellationToken);
        }

        if (changed)
        {
            await PersistRunAsync(run, cancellationToken);
        }
    }

    /// <summary>Runs one admitted VM's workflow on its host and records the outcome.</summary>
    private async Task DispatchAsync(PolicyRunRecord run, PolicyTargetRecord target, bool resumed, CancellationToken cancellationToken)
    {
        // Let the admission loop persist the target as Running before anything happens on the host.
        await Task.Yield();
        using var activity = Telemetry.Source.StartActivity("policy.target");
        activity?.SetTag("policy", Name);
        activity?.SetTag("run", run.RunId);
        activity?.SetTag("host", target.Host);
        activity?.SetTag("vm", target.Vm);
        try
        {
            var vm = GrainFactory.GetGrain<IVirtualMachineGrain>(target.Key);
            if (run.Spec.Kind == PolicyKind.Checkpoint)
            {
                var result = await vm.CreatePolicyCheckpointAsync(
                    new PolicyCheckpointRequest(Name, run.PolicyVersion, run.RunId, run.Spec.RetentionContract(), run.StartedAt),
                    cancellationToken);
                target.Checkpoint = result.Checkpoint.Name;
                activity?.SetTag("checkpoint", target.Checkpoint);
                await EndTargetAsync(run, target, PolicyTargetStatus.Succeeded, result.Pruned.Count > 0 ? $"pruned {string.Join(", ", result.Pruned)}" : null, cancellationToken);
                return;
            }

            var outcome = await BackUpAsync(run, target, vm, resumed, cancellationToken);
            activity?.SetTag("backup_run", target.BackupRun);
            await EndTargetAsync(run, target, outcome.Step == BackupStep.Completed ? PolicyTargetStatus.Succeeded : PolicyTargetStatus.Failed, outcome.Note, cancellationToken);
        }
        catch (Exception) when (cancellationToken.IsCancellationRequested)
        {
            // Deactivation cut the call short (whatever it surfaced as): nothing is recorded, the resumed run finds
            // the VM's state again.
            return;
        }
        catch (OrchestratorException e) when (e.Code == ErrorCode.Conflict)
        {
            // The VM is busy with another operation (a manual backup, a checkpoint): wait and try again.
            var now = time.GetUtcNow();
            target.BusySince ??= now;
            if (now - target.BusySince.Value > options.Value.BusyWait)
            {
                activity?.SetStatus(ActivityStatusCode.Error, e.Message);
                await EndTargetAsync(run, target, PolicyTargetStatus.Failed, $"busy for more than {options.Value.BusyWait}: {e.Message}", cancellationToken);
                return;
            }

            await ReleaseSlotAsync(run, target);
            target.Status = PolicyTargetStatus.Pending;
            target.ReleasedAt = now;
            target.NotBefore = now + BusyBackoff;
            target.Reason = $"busy: {e.Message}";
            await PersistRunAsync(run, cancellationToken);
        }
        catch (OrchestratorException e) when (e.Code == ErrorCode.HostUnavailable)
        {
            activity?.SetStatus(ActivityStatusCode.Error, e.Message);
            Skip(run, target, $"{e.Message}; retried when it is back", retry: true);
            await ReleaseSlotAsync(run, target);
            await PersistRunAsync(run, cancellationToken);
        }
        catch (OrchestratorException e) when (e.Code == ErrorCode.NotFound)
        {
            activity?.SetStatus(ActivityStatusCode.Error, e.Message);
            Skip(run, target, $"VM gone: {e.Message}", retry: false);
            await ReleaseSlotAsync(run, target);
            await PersistRunAsync(run, cancellationToken);
        }
        catch (Exception e)
        {
            activity?.SetStatus(ActivityStatusCode.Error, e.Message);
            await EndTargetAsync(run, target, PolicyTargetStatus.Failed, e.Message, cancellationToken);
        }
    }

    private sealed record BackupOutcome(BackupStep Step, string? Note);

    private async Task<BackupOutcome> BackUpAsync(PolicyRunRecord run, PolicyTargetRecord target, IVirtualMachineGrain vm, bool resumed, CancellationToken cancellationToken)
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
            // After a restart (or a lost answer) the VM may have started this run's backup already: never start two.
            target.BackupRun = await FindOwnBackupAsync(run, target, vm, cancellationToken);
            if (target.BackupRun is not null)
            {
                LogBackupAdopted(logger, Name, run.RunId, target.BackupRun, resumed);
            }
        }

        if (target.BackupRun is null)
        {
            var retention = run.Spec.RetentionContract();
            var request = new BackupRequest
            {
                Target = run.Spec.Target is { } template ? PolicyValidator.RenderTarget(template, Name, target.Host, target.Vm) : null,
                Quiesce = run.Spec.Quiesce,
                Verify = run.Spec.Verify,
                BandwidthBytesPerSecond = run.Spec.BandwidthBytesPerSecond,
                Retention = new BackupRetention(retention.KeepLast, retention.Daily, retention.Weekly, retention.Monthly),
                Policy = Name,
                PolicyVersion = run.PolicyVersion,
                PolicyRun = run.RunId,
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

            await PersistRunAsync(run, cancellationToken);
        }

        var runKey = target.BackupRun;
        var final = await TryWaitAsync(target, vm, runKey, cancellationToken)
            ?? throw OrchestratorException.NotFound($"backup {runKey} is no longer in the history of VM '{target.Key}'");
        return new BackupOutcome(final.Step, final.Step == BackupStep.Completed ? null : final.Error ?? "the backup failed");
    }

    private async Task<string?> FindOwnBackupAsync(PolicyRunRecord run, PolicyTargetRecord target, IVirtualMachineGrain vm, CancellationToken cancellationToken)
    {
        var runs = await CallVmAsync(target, () => vm.ListBackupsAsync(cancellationToken), cancellationToken);
        return runs.FirstOrDefault(r => r.PolicyRun == run.RunId)?.RunKey;
    }

    /// <summary>Follows a VM's backup until it ends; null when the VM does not know that run.</summary>
    private async Task<BackupRunView?> TryWaitAsync(PolicyTargetRecord target, IVirtualMachineGrain vm, string runKey, CancellationToken cancellationToken)
    {
        var runId = BackupRunKeys.Parse(runKey).RunId;
        var version = -1L;
        while (true)
        {
            BackupRunView view;
            try
            {
                view = await CallVmAsync(target, () => vm.WaitBackupAsync(runId, version, WaitSlice, cancellationToken), cancellationToken);
            }
            catch (OrchestratorException e) when (e.Code == ErrorCode.NotFound)
            {
                return null;
            }

            if (view.IsTerminal)
            {
                return view;
            }

            version = view.Version;
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

                LogVmUnreachable(logger, Name, target.Key, e.Message);
                await Task.Delay(UnreachableBackoff, time, cancellationToken);
            }
        }
    }

    private void Skip(PolicyRunRecord run, PolicyTargetRecord target, string reason, bool retry)
    {
        var now = time.GetUtcNow();
        PolicyMetrics.RecordTargetEnded(Name, run, target, PolicyTargetStatus.Skipped);
        target.Status = PolicyTargetStatus.Skipped;
        target.Reason = reason;
        if (target.AdmittedAt is not null && target.ReleasedAt is null)
        {
            target.ReleasedAt = now;
        }

        var pending = state.State.PendingRetries;
        pending.RemoveAll(p => p.Key == target.Key);
        if (retry)
        {
            pending.Add(new PendingRetryRecord { Host = target.Host, Vm = target.Vm, FromRun = run.RunId, BackupRun = target.BackupRun ?? target.CarriedBackupRun });
        }

        LogTargetSkipped(logger, Name, run.RunId, target.Key, reason);
    }

    private async Task EndTargetAsync(PolicyRunRecord run, PolicyTargetRecord target, PolicyTargetStatus status, string? reason, CancellationToken cancellationToken)
    {
        PolicyMetrics.RecordTargetEnded(Name, run, target, status);
        target.Status = status;
        target.Reason = reason;
        target.ReleasedAt = time.GetUtcNow();
        state.State.PendingRetries.RemoveAll(p => p.Key == target.Key);
        await ReleaseSlotAsync(run, target);
        await PersistRunAsync(run, cancellationToken);
        LogTargetEnded(logger, Name, run.RunId, target.Key, status, reason ?? "-");
    }

    /// <summary>
    /// Frees one VM's slot. If the fleet grain cannot be reached, the slot is dropped at this run's next admission
    /// turn (the VM is no longer in AdmissionRequest.Holding) or by the run's final release.
    /// </summary>
    private Task ReleaseSlotAsync(PolicyRunRecord run, PolicyTargetRecord target) =>
        TryReleaseAsync(run.RunId, target.Key, () => Fleet.ReleaseAsync(run.RunId, target.Host, target.Vm));

    private async Task FinishRunAsync(PolicyRunRecord run, CancellationToken cancellationToken)
    {
        if (!await TryReleaseRunAsync(run.RunId, cancellationToken))
        {
            // The fleet grain is unreachable (its silo just died): the tick frees the slots once it is back, and
            // the next run of this policy drops them anyway (see AdmissionRequest.Holding).
            state.State.UnreleasedRuns.Add(run.RunId);
        }

        // The outcome and its version change together (no await between): a watcher never sees one without the other.
        var succeeded = run.Targets.Count(t => t.Status == PolicyTargetStatus.Succeeded);
        run.State = succeeded == run.Targets.Count ? PolicyRunState.Completed
            : succeeded == 0 ? PolicyRunState.Failed
            : PolicyRunState.Partial;
        if (run.State != PolicyRunState.Completed)
        {
            var failed = run.Targets.Count(t => t.Status == PolicyTargetStatus.Failed);
            var skipped = run.Targets.Count(t => t.Status == PolicyTargetStatus.Skipped);
            run.Error = $"{succeeded} of {run.Targets.Count} VMs succeeded, {failed} failed, {skipped} skipped";
        }

        run.EndedAt = time.GetUtcNow();
        run.Version++;
        PolicyMetrics.RecordRunEnded(Name, run);
        await ArchiveRunAsync(run, cancellationToken);
        SignalRunChanged();
        LogRunFinished(logger, Name, run.RunId, run.State, succeeded, run.Targets.Count);
        if (state.State.PendingRetries.Count > 0 || state.State.UnreleasedRuns.Count > 0)
        {
            ArmTick(options.Value.RetryInterval);
        }
    }

    private Task<bool> TryReleaseRunAsync(string runId, CancellationToken cancellationToken) =>
        TryReleaseAsync(runId, "*", () => Fleet.ReleaseRunAsync(runId, cancellationToken));

    /// <summary>One release call to the fleet grain; false, and logged, when it cannot be reached (e.g. its silo just died).</summary>
    private async Task<bool> TryReleaseAsync(string runId, string what, Func<Task> release)
    {
        try
        {
            await release();
            return true;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            LogReleaseFailed(logger, Name, runId, what, e.Message);
            return false;
        }
    }

    /// <summary>Frees the slots of ended runs whose release was lost.</summary>
    private async Task ReleaseLeftoverSlotsAsync(CancellationToken cancellationToken)
    {
        var leftover = state.State.UnreleasedRuns;
        if (leftover.Count == 0)
        {
            return;
        }

        var freed = new List<string>();
        foreach (var runId in leftover.ToList())
        {
            if (await TryReleaseRunAsync(runId, cancellationToken))
            {
                freed.Add(runId);
            }
        }

        if (freed.Count > 0)
        {
            leftover.RemoveAll(freed.Contains);
            await WriteAsync(cancellationToken);
        }
    }

    private async Task PersistRunAsync(PolicyRunRecord run, CancellationToken cancellationToken)
    {
        run.Version++;
        await WriteAsync(cancellationToken);
        SignalRunChanged();
    }

    private void SignalRunChanged()
    {
        var previous = _runChanged;
        _runChanged = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        previous.TrySetResult();
    }

    /// <summary>Moves the finished active run into the history (written first: a crash in between leaves it in both, never in neither).</summary>
    private async Task ArchiveRunAsync(PolicyRunRecord run, CancellationToken cancellationToken)
    {

        if (!history.State.Runs.Any(r => r.RunId == run.RunId))
        {
            history.State.Runs.Add(run);
            TrimHistory();
            RefuseWritesWhileDeactivating();
            await _historyWrites.WriteAsync(cancellationToken);
        }

        // A new run may have started while the history was written (the run's task interleaves with calls).
        if (ReferenceEquals(state.State.ActiveRun, run))
        {
            state.State.ActiveRun = null;
            await WriteAsync(cancellationToken);
        }
    }

    private void TrimHistory()
    {
        var runs = history.State.Runs;
        var limit = Math.Max(1, options.Value.RunHistoryLimit);
        if (runs.Count > limit)
        {
            runs.RemoveRange(0, runs.Count - limit);
        }
    }
}
