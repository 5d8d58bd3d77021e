using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orchestrator.Grains.Backups;
using Orchestrator.Grains.Placement;
using Orchestrator.Grains.Storage;
using Orleans.Placement;

namespace Orchestrator.Grains.Policies;

/// <summary>
/// One fleet-wide policy: its versioned spec, schedule, runs and the VMs waiting for their host to come back.
/// Placed on the silo that first calls it (usually the one serving the gRPC request). The spec and every run are
/// persisted; a reminder (1 minute) wakes the grain after a restart, and a grain timer ticks for schedules and retries
/// while it is active. A run in progress is driven by its per-host parts; this grain coordinates it (budget grants,
/// outcome) from the run's header (see BackupPolicyGrain.Run.cs), and a new activation resumes that.
/// </summary>
[PreferLocalPlacement]
internal sealed partial class BackupPolicyGrain(
    [PersistentState("policy", StorageNames.Default)] IPersistentState<BackupPolicyState> state,
    [PersistentState("policy-runs", StorageNames.Default)] IPersistentState<PolicyRunHistoryState> history,
    IHostDirectory hostDirectory,
    IOptions<BackupOptions> backupOptions,
    IOptions<PolicyOptions> options,
    TimeProvider time,
    ILogger<BackupPolicyGrain> logger) : Grain, IBackupPolicyGrain, IRemindable
{
    internal const string ReminderName = "policy-tick";
    private static readonly TimeSpan ReminderPeriod = TimeSpan.FromMinutes(1);

    /// <summary>One writer per state: the run's task interleaves with calls (see StateWriteGate).</summary>
    private readonly StateWriteGate _stateWrites = new(() => state.WriteStateAsync());
    private readonly StateWriteGate _historyWrites = new(() => history.WriteStateAsync());
    private IGrainTimer? _tickTimer;
    private bool _registered;
    private bool _deactivating;

    private string Name => this.GetPrimaryKeyString();

    private IFleetGrain Fleet => GrainFactory.GetGrain<IFleetGrain>(GrainKeys.Fleet);

    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        if (!state.State.Exists)
        {
            return;
        }

        PolicyMetrics.Publish(this, Name, state.State);

        if (state.State.LegacyRuns.Count > 0)
        {
            await MigrateLegacyRunsAsync(cancellationToken);
        }

        if (state.State.ActiveRun is { IsTerminal: true } finished)
        {
            // The silo died between recording a finished run in the history and clearing it here.
            await ArchiveRunAsync(finished, cancellationToken);
        }
        else if (state.State.ActiveRun is { HasInlineTargets: true } inline)
        {
            // Written by the code before per-host parts: the tick hands it to parts.
            await MigrateInlineRunAsync(inline, cancellationToken);
        }

        try
        {
            await EnsureReminderAsync(cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // The timer still ticks while this activation lives; the next activation tries again.
            LogReminderFailed(logger, Name, e.Message);
        }

        ArmTick(TimeSpan.Zero);
    }

    /// <summary>
    /// Runs stored by the code before the history had its own state (all in the hot state): the finished ones move to
    /// the history (written first: a crash in between leaves them in both, and the next activation skips those already
    /// there), one still running becomes the active run (handed to parts like any old-shape run), and the hot state
    /// is written without them.
    /// </summary>
    private async Task MigrateLegacyRunsAsync(CancellationToken cancellationToken)
    {
        var s = state.State;
        var known = history.State.Runs.Select(r => r.RunId).ToHashSet(StringComparer.Ordinal);
        var finished = s.LegacyRuns.Where(r => r.IsTerminal && !known.Contains(r.RunId)).ToList();
        if (finished.Count > 0)
        {
            history.State.Runs.AddRange(finished);
            history.State.Runs.Sort((a, b) => a.StartedAt.CompareTo(b.StartedAt));
            TrimHistory();
            await _historyWrites.WriteAsync(cancellationToken);
        }

        if (s.ActiveRun is null && s.LegacyRuns.LastOrDefault(r => !r.IsTerminal) is { } running)
        {
            s.ActiveRun = running;
        }

        var moved = s.LegacyRuns.Count;
        s.LegacyRuns = [];
        await WriteAsync(cancellationToken);
        LogLegacyRunsMigrated(logger, Name, moved, finished.Count);
    }

    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        // The run's task may still persist (and so publish) until it has stopped: this activation reports no more.
        _deactivating = true;
        PolicyMetrics.Forget(this);
        _tickTimer?.Dispose();
        await Task.WhenAll(_stateWrites.DrainAsync(), _historyWrites.DrainAsync()).WaitAsync(cancellationToken).ContinueWith(_ => { }, TaskScheduler.Current);
    }

    public async Task<PolicyApplyResult> ApplyAsync(PolicySpec spec, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(spec);
        using var activity = Telemetry.Source.StartActivity("policy.apply");
        activity?.SetTag("policy", Name);
        if (!string.Equals(spec.Name, Name, StringComparison.Ordinal))
        {
            PolicyNames.Validate(spec.Name);
            throw OrchestratorException.InvalidArgument("name", $"'{spec.Name}' does not match the policy addressed ('{Name}')");
        }

        var now = time.GetUtcNow();
        var validated = PolicyValidator.Validate(spec, backupOptions.Value, now);
        var s = state.State;
        if (s.Exists && s.Spec.Kind != validated.Spec.Kind)
        {
            throw OrchestratorException.InvalidArgument(
                "kind",
                $"policy '{Name}' exists with kind {KindName(s.Spec.Kind)}; a policy's kind cannot change (its runs and retention would mix): delete it first, or use another name");
        }

        var record = PolicySpecRecord.From(validated.Spec);
        if (s.Exists && record.SameAs(s.Spec))
        {
            await EnsureRegisteredAsync(cancellationToken);
            activity?.SetTag("changed", false);
            return new PolicyApplyResult(await ViewAsync(cancellationToken), Created: false, Changed: false);
        }

        var created = !s.Exists;
        var scheduleChanged = created || record.Cron != s.Spec.Cron || record.TimeZone != s.Spec.TimeZone;
        s.Exists = true;
        s.Spec = record;
        s.Version++;
        s.UpdatedAt = now;
        if (created)
        {
            s.CreatedAt = now;
        }

        if (scheduleChanged)
        {
            s.NextRunAt = NextOccurrence(now);
        }

        await WriteAsync(cancellationToken);
        _registered = false;
        await EnsureRegisteredAsync(cancellationToken);
        await EnsureReminderAsync(cancellationToken);
        ArmTick(TimeSpan.Zero);
        activity?.SetTag("version", s.Version);
        activity?.SetTag("changed", true);
        LogApplied(logger, Name, s.Version, created);
        return new PolicyApplyResult(await ViewAsync(cancellationToken), created, Changed: true);
    }

    public Task<PolicyView> GetAsync(CancellationToken cancellationToken = default)
    {
        RequireExists();
        return ViewAsync(cancellationToken);
    }

    public async Task<bool> DeleteAsync(CancellationToken cancellationToken = default)
    {
        if (!state.State.Exists)
        {
            DeactivateOnIdle();
            return false;
        }

        if (ActiveRun() is { } active)
        {
            throw new OrchestratorException(
                ErrorCode.Conflict,
                $"policy '{Name}' has run {active.RunId} in progress; wait for it to end (policy run-show {Name} {active.RunId}) and delete again");
        }

        await Fleet.UnregisterPolicyAsync(Name, cancellationToken);

        // The parts keep their runs' VMs: dropped with the policy (best effort: a part that cannot be reached keeps
        // an orphaned history no run id will ever ask for again).
        var hosts = history.State.Runs.SelectMany(r => r.Parts).Select(p => p.Host).Distinct(StringComparer.Ordinal).ToList();
        await Task.WhenAll(hosts.Select(async host =>
        {
            try
            {
                await Part(host).ClearAsync(cancellationToken).WaitAsync(PartCallLimit, time, cancellationToken);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                LogPartUnreachable(logger, Name, "-", host, e.Message);
            }
        }));
        await _historyWrites.RunAloneAsync(() => history.ClearStateAsync());
        history.State = new PolicyRunHistoryState();
        await _stateWrites.RunAloneAsync(() => state.ClearStateAsync());
        state.State = new BackupPolicyState();
        PolicyMetrics.Forget(this);
        _tickTimer?.Dispose();
        _tickTimer = null;
        if (await this.GetReminder(ReminderName, cancellationToken) is { } reminder)
        {
            await this.UnregisterReminder(reminder, cancellationToken);
        }

        LogDeleted(logger, Name);
        DeactivateOnIdle();
        return true;
    }

    public async Task<PolicyRunView> RunNowAsync(CancellationToken cancellationToken = default)
    {
        RequireExists();
        if (ActiveRun() is { } active)
        {
            throw new OrchestratorException(
                ErrorCode.Conflict,
                $"policy '{Name}' already has run {active.RunId} in progress (watch it with: policy run-show {Name} {active.RunId} --watch)");
        }

        var run = await StartRunAsync(PolicyRunTrigger.Manual, cancellationToken);
        return await AssembleAsync(run, cancellationToken);
    }

    public Task<PolicyRunView> GetRunAsync(string runId, CancellationToken cancellationToken = default) =>
        AssembleAsync(FindRun(runId), cancellationToken);

    public async Task<IReadOnlyList<PolicyRunView>> ListRunsAsync(int limit = 20, CancellationToken cancellationToken = default)
    {
        RequireExists();
        if (limit is < 1 or > 1000)
        {
            throw OrchestratorException.InvalidArgument("limit", $"must be between 1 and 1000, not {limit}");
        }

        return await AssembleAsync([.. AllRuns().Reverse().Take(limit)], cancellationToken);
    }

    public async Task<PolicyRunView> WaitRunAsync(string runId, long afterVersion, TimeSpan maxWait, CancellationToken cancellationToken = default)
    {
        var deadline = time.GetUtcNow() + maxWait;
        while (true)
        {
            var run = FindRun(runId);
            var view = await AssembleAsync(run, cancellationToken);
            var remaining = deadline - time.GetUtcNow();
            if (view.Version > afterVersion || view.IsTerminal || remaining <= TimeSpan.Zero)
            {
                return view;
            }

            await WaitAnyChangeAsync(run, afterVersion, remaining, cancellationToken);
        }
    }

    public async Task<PolicyRunChanges> WaitRunChangesAsync(string runId, PolicyRunCursor? since, TimeSpan maxWait, CancellationToken cancellationToken = default)
    {
        if (since is not null && since.RunId != runId)
        {
            throw OrchestratorException.InvalidArgument("since", $"the cursor is of run '{since.RunId}', not of '{runId}'");
        }

        var deadline = time.GetUtcNow() + maxWait;
        while (true)
        {
            var run = FindRun(runId);
            var changes = await ChangesAsync(run, since, cancellationToken);
            var remaining = deadline - time.GetUtcNow();
            if (since is null || !changes.Cursor.SameAs(since) || changes.Run.IsTerminal || remaining <= TimeSpan.Zero)
            {
                return changes;
            }

            await WaitAnyChangeAsync(run, since, remaining, cancellationToken);
        }
    }

    public async Task ReceiveReminder(string reminderName, TickStatus status)
    {
        if (reminderName != ReminderName)
        {
            return;
        }

        if (!state.State.Exists)
        {
            // A leftover of a deleted policy.
            if (await this.GetReminder(ReminderName) is { } reminder)
            {
                await this.UnregisterReminder(reminder);
            }

            return;
        }

        await TickAsync(CancellationToken.None);
    }

    /// <summary>
    /// The grain's clock: resumes a run this activation does not drive yet, starts a due scheduled run (one, however
    /// many slots passed), and starts a retry run for skipped VMs whose host is back.
    /// </summary>
    private async Task TickAsync(CancellationToken cancellationToken)
    {
        if (!state.State.Exists)
        {
            return;
        }

        try
        {
            await EnsureRegisteredAsync(cancellationToken);
            var now = time.GetUtcNow();
            var s = state.State;
            var due = s.NextRunAt is { } at && at <= now;
            if (ActiveRun() is { } active)
            {
                // Starts parts not started yet, re-tells grants, and re-activates (so recovers) a part whose silo died.
                await SyncPartsAsync(active, cancellationToken);

                if (due)
                {
                    // The slot finds a run still going: it is not run, it is counted.
                    s.MissedSlots++;
                    s.NextRunAt = NextOccurrence(now);
                    await WriteAsync(cancellationToken);
                }
            }
            else if (due)
            {
                s.NextRunAt = NextOccurrence(now);
                await StartRunAsync(PolicyRunTrigger.Schedule, cancellationToken);
            }
            else if (s.PendingRetries.Count > 0)
            {
                var served = hostDirectory.ServedHosts();
                if (s.PendingRetries.Any(p => served.ContainsKey(p.Host)))
                {
                    await StartRunAsync(PolicyRunTrigger.Retry, cancellationToken);
                }
            }
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            LogTickFailed(logger, Name, e.Message);
        }
        finally
        {
            ArmTick(null);
        }
    }

    private DateTimeOffset? NextOccurrence(DateTimeOffset after)
    {
        var spec = state.State.Spec;
        if (spec.Cron is null)
        {
            return null;
        }

        var cron = Checkpoints.CheckpointSchedulePlanner.ParseCron(spec.Cron);
        var zone = Checkpoints.CheckpointSchedulePlanner.ParseTimeZone(spec.TimeZone);
        return cron.GetNextOccurrence(after.UtcDateTime, zone) is { } next ? new DateTimeOffset(next, TimeSpan.Zero) : null;
    }

    /// <summary>Arms the tick for the next due time or the retry interval, whichever comes first (<paramref name="wait"/> overrides).</summary>
    private void ArmTick(TimeSpan? wait)
    {
        if (!state.State.Exists)
        {
            return;
        }

        var next = wait ?? TickWait();
        if (_tickTimer is null)
        {
            _tickTimer = this.RegisterGrainTimer(
                static (grain, ct) => grain.TickAsync(ct),
                this,
                new GrainTimerCreationOptions(next, Timeout.InfiniteTimeSpan) { Interleave = false, KeepAlive = false });
        }
        else
        {
            _tickTimer.Change(next, Timeout.InfiniteTimeSpan);
        }
    }

    private TimeSpan TickWait()
    {
        var wait = options.Value.RetryInterval;
        if (state.State.NextRunAt is { } at)
        {
            var untilDue = at - time.GetUtcNow();
            wait = untilDue < wait ? untilDue : wait;
        }

        return wait < TimeSpan.FromMilliseconds(50) ? TimeSpan.FromMilliseconds(50) : wait;
    }

    private async Task EnsureRegisteredAsync(CancellationToken cancellationToken)
    {
        if (_registered || !state.State.Exists)
        {
            return;
        }

        await Fleet.RegisterPolicyAsync(new PolicyRegistration(state.State.Spec.ToContract(), state.State.Version), cancellationToken);
        _registered = true;
    }

    private async Task EnsureReminderAsync(CancellationToken cancellationToken) =>
        await this.RegisterOrUpdateReminder(ReminderName, ReminderPeriod, ReminderPeriod, cancellationToken);

    /// <summary>Persists the state; writes from the run's interleaved tasks go one at a time (the storage ETag allows no overlap).</summary>
    private async Task WriteAsync(CancellationToken cancellationToken)
    {
        RefuseWritesWhileDeactivating();
        PolicyMetrics.Publish(this, Name, state.State);
        await _stateWrites.WriteAsync(cancellationToken);
    }

    /// <summary>
    /// A task of this activation that outlives its deactivation (a VM call that returned after the run's task was
    /// cancelled) must not write: the next activation resumes from what is persisted, and a late write would make
    /// that activation's next write fail on its stale ETag.
    /// </summary>
    private void RefuseWritesWhileDeactivating()
    {
        if (_deactivating)
        {
            throw new OperationCanceledException($"policy '{Name}': this activation is deactivating; the next one resumes from the persisted state");
        }
    }

    private void RequireExists()
    {
        if (!state.State.Exists)
        {
            DeactivateOnIdle();
            throw OrchestratorException.NotFound($"policy '{Name}' does not exist");
        }
    }

    private PolicyRunRecord? ActiveRun() => state.State.ActiveRun is { IsTerminal: false } run ? run : null;

    /// <summary>Finished runs and the one in progress, oldest first.</summary>
    private IEnumerable<PolicyRunRecord> AllRuns() =>
        state.State.ActiveRun is { } active && !history.State.Runs.Any(r => r.RunId == active.RunId)
            ? history.State.Runs.Append(active)
            : history.State.Runs;

    private PolicyRunRecord FindRun(string runId)
    {
        RequireExists();
        return AllRuns().FirstOrDefault(r => r.RunId == runId)
            ?? throw OrchestratorException.NotFound($"policy '{Name}' has no run '{runId}' (it keeps the last {options.Value.RunHistoryLimit})");
    }

    private async Task<PolicyView> ViewAsync(CancellationToken cancellationToken)
    {
        var s = state.State;
        var last = AllRuns().LastOrDefault() is { } run ? await AssembleAsync(run, cancellationToken) : null;
        return new PolicyView(
            s.Spec.ToContract(),
            s.Version,
            s.CreatedAt,
            s.UpdatedAt,
            s.NextRunAt,
            last,
            [.. s.PendingRetries.Select(p => p.Key)]);
    }

    private PolicyRunView RunView(PolicyRunRecord run, IReadOnlyList<PolicyTargetView> targets, long version) => new(
        run.RunId,
        Name,
        run.PolicyVersion,
        run.Spec.Kind,
        run.Trigger,
        run.RetryOf,
        run.State,
        run.StartedAt,
        run.EndedAt,
        targets,
        new PolicyConcurrency(run.Spec.PerHost, run.Spec.Fleet),
        ActivityContext.TryParse(run.TraceParent, null, out var context) ? context.TraceId.ToHexString() : null,
        version,
        run.Error);

    internal static string KindName(PolicyKind kind) => kind == PolicyKind.LiveBackup ? "live-backup" : "checkpoint";
}
