using System.Diagnostics;

namespace Orchestrator.Grains.Policies;

/// <summary>
/// A policy run, coordinated: the targets are selected from the fleet's VM index, grouped by host, and each host's
/// VMs are handed to that host's part (<see cref="IPolicyHostRunGrain"/>, on the host's silo), which drives them. This
/// grain keeps only the run's header: the spec, the trigger, the times and one record per part with its budget grant
/// and, once it ended, its counts. It writes that header at the start, when grants change, when a part ends and at
/// the end: O(hosts) writes per run, never one per VM.
/// </summary>
/// <remarks>
/// Fleet budget: <c>concurrency.fleet</c> is split into per-host grants, <c>sum(Granted - Returned) &lt;= fleet</c>
/// over the parts not done, always. A grant is persisted here before the part is told; budget a part hands back is
/// persisted by the part before it tells this grain; both totals are cumulative, so lost, repeated or reordered
/// messages can only make this grain count more than a part holds, never less. A part lost with its silo keeps its
/// grant counted here until it reports again (this grain's tick syncs every unfinished part, which activates and
/// recovers it elsewhere) or the run ends; the recovering part asks for its grant. The budget therefore holds under
/// silo loss, the policy grain's own included (it resumes from its header; the parts never stopped).
/// </remarks>
internal sealed partial class BackupPolicyGrain : IPolicyRunCoordinator
{
    private static readonly TimeSpan PartCallLimit = TimeSpan.FromSeconds(10);

    private TaskCompletionSource _runChanged = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private IPolicyHostRunGrain Part(string host) => GrainFactory.GetGrain<IPolicyHostRunGrain>($"{host}{GrainKeys.Separator}{Name}");

    private async Task<PolicyRunRecord> StartRunAsync(PolicyRunTrigger trigger, CancellationToken cancellationToken)
    {
        var s = state.State;
        if (s.ActiveRun is { IsTerminal: true } previous)
        {
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

        // The run's own span: the parts' policy.target spans (and each VM's backup.run below them, on its own host's
        // silo) hang below it through the traceparent the parts are given; policy.end closes the run in the same trace.
        using var runActivity = Telemetry.Source.StartActivity("policy.run");
        runActivity?.SetTag("policy", Name);
        runActivity?.SetTag("policy.version", run.PolicyVersion);
        runActivity?.SetTag("run", run.RunId);
        runActivity?.SetTag("kind", KindName(run.Spec.Kind));
        run.TraceParent = runActivity?.Id ?? activity?.Id ?? Activity.Current?.Id;

        List<PolicyTargetRecord> targets;
        if (trigger == PolicyRunTrigger.Retry)
        {
            // The VMs whose host is back; the others keep waiting.
            var served = hostDirectory.ServedHosts();
            var ready = s.PendingRetries.Where(p => served.ContainsKey(p.Host)).ToList();
            run.RetryOf = ready.Select(p => p.FromRun).Order(StringComparer.Ordinal).FirstOrDefault();
            targets = [.. ready.Select(p => new PolicyTargetRecord { Host = p.Host, Vm = p.Vm, CarriedBackupRun = p.BackupRun })];
            s.PendingRetries.RemoveAll(p => ready.Contains(p));
        }
        else
        {
            var selected = await Fleet.SelectAsync(run.Spec.ToContract().Selector, cancellationToken);
            targets = [.. selected.Select(vm => new PolicyTargetRecord { Host = vm.Host, Vm = vm.Name })];

            // A VM waiting for its host is in this run now (skipped again, it is reported again).
            var keys = targets.Select(t => t.Key).ToHashSet(StringComparer.Ordinal);
            s.PendingRetries.RemoveAll(p => keys.Contains(p.Key));
        }

        run.Parts = [.. targets
            .GroupBy(t => t.Host, StringComparer.Ordinal)
            .OrderBy(g => g.Key, StringComparer.Ordinal)
            .Select(g => new PolicyRunPartRecord { Host = g.Key, TargetCount = g.Count(), Waiting = g.Count(), Handoff = [.. g] })];
        if (targets.Count == 0)
        {
            run.State = PolicyRunState.Failed;
            run.EndedAt = now;
            run.Error = "the selector matches no VM in the fleet's inventory (see: orchestrator vm list)";
        }

        Distribute(run);
        run.Version = NextVersion(run.Version);
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

        // The header (with each part's VMs until the part stored them) is written before any part starts.
        await WriteAsync(cancellationToken);
        activity?.SetTag("targets", targets.Count);
        activity?.SetTag("hosts", run.Parts.Count);
        LogRunStarted(logger, Name, run.RunId, trigger, targets.Count);
        SignalRunChanged();
        if (!run.IsTerminal)
        {
            await SyncPartsAsync(run, cancellationToken);
        }

        return run;
    }

    /// <summary>
    /// Hands out the fleet budget nobody holds to parts that still have VMs waiting, at most per_host each, the
    /// emptiest part first. Returns the parts whose grant grew (to persist, then tell).
    /// </summary>
    private static List<PolicyRunPartRecord> Distribute(PolicyRunRecord run)
    {
        var grown = new List<PolicyRunPartRecord>();
        if (run.IsTerminal)
        {
            return grown;
        }

        var free = run.Spec.Fleet - run.Parts.Sum(p => p.Held);
        var given = new Dictionary<PolicyRunPartRecord, int>(ReferenceEqualityComparer.Instance);
        while (free > 0)
        {
            var next = run.Parts
                .Where(p => !p.Done && p.Held < run.Spec.PerHost && given.GetValueOrDefault(p) < p.Waiting)
                .OrderBy(p => p.Held)
                .ThenByDescending(p => p.Waiting - given.GetValueOrDefault(p))
                .ThenBy(p => p.Host, StringComparer.Ordinal)
                .FirstOrDefault();
            if (next is null)
            {
                break;
            }

            next.Granted++;
            given[next] = given.GetValueOrDefault(next) + 1;
            free--;
            if (!grown.Contains(next))
            {
                grown.Add(next);
            }
        }

        return grown;
    }

    /// <summary>
    /// Starts the parts not started yet and syncs the others (their grant, and a probe that re-activates a part whose
    /// silo died); applies what they answer. Called at the start of a run and on every tick while it runs.
    /// </summary>
    private async Task SyncPartsAsync(PolicyRunRecord run, CancellationToken cancellationToken)
    {
        var open = run.Parts.Where(p => !p.Done).ToList();
        var answers = await Task.WhenAll(open.Select(async part =>
        {
            try
            {
                var status = part.Handoff.Count > 0
                    ? await Part(part.Host).StartAsync(
                        new PolicyHostRunStart(Name, run.RunId, run.PolicyVersion, run.Spec, run.StartedAt, run.TraceParent, part.Handoff, part.Granted),
                        cancellationToken).WaitAsync(PartCallLimit, time, cancellationToken)
                    : await Part(part.Host).SyncAsync(run.RunId, part.Granted, cancellationToken).WaitAsync(PartCallLimit, time, cancellationToken);
                return (Part: part, Status: status, Started: part.Handoff.Count > 0);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                LogPartUnreachable(logger, Name, run.RunId, part.Host, e.Message);
                return (Part: part, Status: (PolicyHostRunStatus?)null, Started: false);
            }
        }));

        var changed = false;
        foreach (var (part, status, started) in answers)
        {
            if (status is null)
            {
                continue;
            }

            if (started)
            {
                part.Handoff = [];
                changed = true;
            }

            if (!status.Known)
            {
                // The part lost a run it had confirmed (its state was cleared): its VMs cannot be followed any more.
                part.Done = true;
                part.Failed = part.TargetCount - part.Succeeded - part.Skipped;
                part.Waiting = 0;
                changed = true;
                LogPartLost(logger, Name, run.RunId, part.Host);
                continue;
            }

            changed |= Apply(run, part, status);
        }

        if (ReferenceEquals(state.State.ActiveRun, run) && !run.IsTerminal)
        {
            await AfterPartNewsAsync(run, changed, cancellationToken);
        }
    }

    /// <summary>Takes in a part's report; true when the header changed.</summary>
    private bool Apply(PolicyRunRecord run, PolicyRunPartRecord part, PolicyHostRunStatus status)
    {
        var changed = false;
        if (status.Returned > part.Returned)
        {
            part.Returned = status.Returned;
            changed = true;
        }

        if (!part.Done)
        {
            // Advisory (where freed budget goes first): not worth a write of its own.
            part.Waiting = status.Waiting;
        }

        if (status.Version > part.Version)
        {
            part.Version = status.Version;
        }

        if (status.Done && !part.Done)
        {
            part.Done = true;
            part.Waiting = 0;
            part.Succeeded = status.Succeeded;
            part.Failed = status.Failed;
            part.Skipped = status.Skipped;
            part.Handoff = [];
            var pending = state.State.PendingRetries;
            foreach (var retry in status.Retries)
            {
                pending.RemoveAll(p => p.Key == retry.Key);
                pending.Add(retry);
            }

            LogPartEnded(logger, Name, run.RunId, part.Host, status.Succeeded, part.TargetCount);
            changed = true;
        }

        return changed;
    }

    /// <summary>Hands freed budget on (persisted first, then told), or ends the run when every part ended.</summary>
    private async Task AfterPartNewsAsync(PolicyRunRecord run, bool changed, CancellationToken cancellationToken)
    {
        if (!ReferenceEquals(state.State.ActiveRun, run) || run.IsTerminal)
        {
            return;
        }

        if (run.Parts.All(p => p.Done))
        {
            await FinishRunAsync(run, cancellationToken);
            return;
        }

        var grown = Distribute(run);
        if (!changed && grown.Count == 0)
        {
            SignalRunChanged();
            return;
        }

        run.Version = NextVersion(run.Version);
        await WriteAsync(cancellationToken);
        SignalRunChanged();
        foreach (var part in grown.Where(p => p.Handoff.Count == 0))
        {
            _ = TellGrantAsync(run, part);
        }
    }

    private async Task TellGrantAsync(PolicyRunRecord run, PolicyRunPartRecord part)
    {
        try
        {
            var status = await Part(part.Host).SyncAsync(run.RunId, part.Granted).WaitAsync(PartCallLimit, time);
            if (status.Done && ReferenceEquals(state.State.ActiveRun, run) && Apply(run, part, status))
            {
                await AfterPartNewsAsync(run, changed: true, CancellationToken.None);
            }
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // The next tick's sync tells it again.
            LogPartUnreachable(logger, Name, run.RunId, part.Host, e.Message);
        }
    }

    public async Task ReportPartAsync(string host, PolicyHostRunStatus status, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(status);
        if (state.State.ActiveRun is not { IsTerminal: false, HasInlineTargets: false } run || run.RunId != status.RunId
            || run.Parts.FirstOrDefault(p => p.Host == host) is not { } part)
        {
            return;
        }

        var changed = Apply(run, part, status);
        await AfterPartNewsAsync(run, changed, cancellationToken);
    }

    public Task<int> GetGrantAsync(string host, string runId, CancellationToken cancellationToken = default) =>
        Task.FromResult(state.State.ActiveRun is { } run && run.RunId == runId && run.Parts.FirstOrDefault(p => p.Host == host) is { Done: false } part
            ? part.Granted
            : 0);

    /// <summary>
    /// A run written by the code before per-host parts (every VM in the run record): handed to parts with the
    /// statuses it had; the parts re-resolve the VMs that were running through their VM grains.
    /// </summary>
    private async Task MigrateInlineRunAsync(PolicyRunRecord run, CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow();
        foreach (var target in run.Targets.Where(t => t.Status == PolicyTargetStatus.Pending && t.AdmittedAt is not null && t.ReleasedAt is null))
        {
            target.ReleasedAt = now;
        }

        run.Parts = [.. run.Targets
            .GroupBy(t => t.Host, StringComparer.Ordinal)
            .OrderBy(g => g.Key, StringComparer.Ordinal)
            .Select(g =>
            {
                var open = g.Count(t => !t.IsTerminal);
                return new PolicyRunPartRecord
                {
                    Host = g.Key,
                    TargetCount = g.Count(),
                    Waiting = open,

                    // Targets it had running hold a slot from the start (they are re-resolved before anything new).
                    Granted = Math.Min(g.Count(t => t.Status == PolicyTargetStatus.Running), run.Spec.PerHost),
                    Handoff = [.. g],
                };
            })];
        run.Targets = [];
        Distribute(run);
        run.Version = NextVersion(run.Version);
        state.State.UnreleasedRuns.Clear();
        await WriteAsync(cancellationToken);
        LogRunMigrated(logger, Name, run.RunId, run.Parts.Count);
    }

    private async Task FinishRunAsync(PolicyRunRecord run, CancellationToken cancellationToken)
    {
        // The outcome and its version change together (no await between): a watcher never sees one without the other.
        var total = run.Parts.Sum(p => p.TargetCount);
        var succeeded = run.Parts.Sum(p => p.Succeeded);
        run.State = succeeded == total ? PolicyRunState.Completed
            : succeeded == 0 ? PolicyRunState.Failed
            : PolicyRunState.Partial;
        if (run.State != PolicyRunState.Completed)
        {
            run.Error = $"{succeeded} of {total} VMs succeeded, {run.Parts.Sum(p => p.Failed)} failed, {run.Parts.Sum(p => p.Skipped)} skipped";
        }

        run.EndedAt = time.GetUtcNow();
        run.Version = NextVersion(run.Version);
        PolicyMetrics.RecordRunEnded(Name, run);
        using (var end = Telemetry.Source.StartActivity("policy.end", ActivityKind.Internal, ActivityContext.TryParse(run.TraceParent, null, out var parent) ? parent : default))
        {
            end?.SetTag("policy", Name);
            end?.SetTag("run", run.RunId);
            end?.SetTag("outcome", run.State.ToString().ToLowerInvariant());
            end?.SetTag("succeeded", succeeded);
            end?.SetTag("failed", run.Parts.Sum(p => p.Failed));
            end?.SetTag("skipped", run.Parts.Sum(p => p.Skipped));
            end?.SetTag("duration_s", (run.EndedAt.Value - run.StartedAt).TotalSeconds);
            if (run.State != PolicyRunState.Completed)
            {
                end?.SetStatus(ActivityStatusCode.Error, run.Error);
            }
        }

        await ArchiveRunAsync(run, cancellationToken);
        SignalRunChanged();
        LogRunFinished(logger, Name, run.RunId, run.State, succeeded, total);
        if (state.State.PendingRetries.Count > 0)
        {
            ArmTick(options.Value.RetryInterval);
        }
    }

    private long NextVersion(long previous) => Math.Max(previous + 1, time.GetUtcNow().UtcTicks);

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

        // A new run may have started while the history was written.
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

    /// <summary>The runs' VMs, read from their parts in parallel (one call per host); runs of the old shape carry their own.</summary>
    private async Task<List<PolicyRunView>> AssembleAsync(IReadOnlyList<PolicyRunRecord> runs, CancellationToken cancellationToken)
    {
        var byHost = runs
            .SelectMany(r => r.Parts.Where(p => p.Handoff.Count == 0).Select(p => (p.Host, r.RunId)))
            .GroupBy(x => x.Host, StringComparer.Ordinal)
            .ToList();
        var answers = await Task.WhenAll(byHost.Select(async g =>
        {
            try
            {
                var found = await Part(g.Key).GetTargetsAsync([.. g.Select(x => x.RunId)], cancellationToken).WaitAsync(PartCallLimit, time, cancellationToken);
                return (Host: g.Key, Found: found);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                LogPartUnreachable(logger, Name, string.Join(",", g.Select(x => x.RunId)), g.Key, e.Message);
                return (Host: g.Key, Found: (IReadOnlyList<PolicyHostRunTargets>)[]);
            }
        }));
        var lookup = answers
            .SelectMany(a => a.Found.Select(f => (a.Host, f)))
            .ToDictionary(x => (x.Host, x.f.RunId), x => x.f);

        var views = new List<PolicyRunView>(runs.Count);
        foreach (var run in runs)
        {
            if (run.Parts.Count == 0)
            {
                views.Add(RunView(run, [.. run.Targets.Select(TargetView)], run.Version));
                continue;
            }

            var targets = new List<PolicyTargetView>();
            var version = run.Version;
            foreach (var part in run.Parts)
            {
                if (part.Handoff.Count > 0)
                {
                    targets.AddRange(part.Handoff.Select(TargetView));
                }
                else if (lookup.TryGetValue((part.Host, run.RunId), out var found))
                {
                    targets.AddRange(found.Targets);
                    version = Math.Max(version, found.Version);
                }
            }

            views.Add(RunView(run, targets, run.IsTerminal ? run.Version : version));
        }

        return views;
    }

    private async Task<PolicyRunView> AssembleAsync(PolicyRunRecord run, CancellationToken cancellationToken) =>
        (await AssembleAsync([run], cancellationToken))[0];

    private static PolicyTargetView TargetView(PolicyTargetRecord t) =>
        new(t.Host, t.Vm, t.Status, t.BackupRun, t.Checkpoint, t.Reason, t.AdmittedAt, t.ReleasedAt, t.Attempts);

    /// <summary>
    /// A run's changes since <paramref name="since"/>: the header, and from each part (one call per host, in parallel)
    /// only the targets its change log has after the cursor's version. A part not started yet sends its handed-over
    /// VMs once; a part that does not answer keeps its cursor (its changes come later).
    /// </summary>
    private async Task<PolicyRunChanges> ChangesAsync(PolicyRunRecord run, PolicyRunCursor? since, CancellationToken cancellationToken)
    {
        if (run.Parts.Count == 0)
        {
            // A run of the old shape carries its VMs inline: whole, every time (it changes no more).
            var all = run.Targets.Select(TargetView).ToList();
            return new PolicyRunChanges(RunView(run, all, run.Version), Full: true, PolicyRunCounts.Of(all.Select(t => t.Status)), new PolicyRunCursor(run.RunId, run.Version, []));
        }

        var seen = since?.Parts.ToDictionary(p => p.Host, StringComparer.Ordinal) ?? new Dictionary<string, PolicyRunPartCursor>(StringComparer.Ordinal);
        var answers = await Task.WhenAll(run.Parts.Select(async part =>
        {
            var before = seen.GetValueOrDefault(part.Host);
            if (part.Handoff.Count > 0)
            {
                // Its VMs are still in the header (their statuses do not change before the part has them): sent once.
                var counts = PolicyRunCounts.Of(part.Handoff.Select(t => t.Status));
                IReadOnlyList<PolicyTargetView> handed = before is { Epoch: 0 } ? [] : [.. part.Handoff.Select(TargetView)];
                return (Cursor: new PolicyRunPartCursor(part.Host, 0, run.Version, counts), Targets: handed);
            }

            try
            {
                var found = await Part(part.Host).GetChangesAsync(run.RunId, before?.Epoch ?? 0, before?.Version ?? 0, cancellationToken).WaitAsync(PartCallLimit, time, cancellationToken);
                if (found is not null)
                {
                    return (Cursor: new PolicyRunPartCursor(part.Host, found.Epoch, found.Version, found.Counts), found.Targets);
                }
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                LogPartUnreachable(logger, Name, run.RunId, part.Host, e.Message);
            }

            // Unreachable, or it lost the run: what the watcher saw stands (the header's counts when it saw nothing).
            var known = before ?? new PolicyRunPartCursor(part.Host, -1, 0, part.Done
                ? new PolicyRunCounts(0, 0, part.Succeeded, part.Failed, part.Skipped)
                : new PolicyRunCounts(part.TargetCount - part.Succeeded - part.Failed - part.Skipped, 0, part.Succeeded, part.Failed, part.Skipped));
            return (Cursor: known, Targets: (IReadOnlyList<PolicyTargetView>)[]);
        }));

        var targets = answers.SelectMany(a => a.Targets).ToList();
        var cursor = new PolicyRunCursor(run.RunId, run.Version, [.. answers.Select(a => a.Cursor)]);
        var version = run.IsTerminal ? run.Version : Math.Max(run.Version, answers.Max(a => a.Cursor.Version));
        var total = answers.Aggregate(PolicyRunCounts.Zero, (sum, a) => sum.Plus(a.Cursor.Counts));
        return new PolicyRunChanges(RunView(run, targets, version), Full: since is null, total, cursor);
    }

    /// <summary>Waits for the header to move past the cursor or any unfinished part to change past its own cursor.</summary>
    private async Task WaitAnyChangeAsync(PolicyRunRecord run, PolicyRunCursor since, TimeSpan wait, CancellationToken cancellationToken)
    {
        if (run.Version != since.Header)
        {
            return;
        }

        var seen = since.Parts.ToDictionary(p => p.Host, StringComparer.Ordinal);
        var waits = run.Parts
            .Where(p => !p.Done && p.Handoff.Count == 0)
            .Select(async p =>
            {
                var before = seen.GetValueOrDefault(p.Host);
                try
                {
                    await Part(p.Host).WaitChangeSinceAsync(run.RunId, before?.Epoch ?? 0, before?.Version ?? 0, wait, cancellationToken);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    // An unreachable part does not wake the watcher (it would spin): only the header or another part does.
                    await Task.Delay(wait, time, cancellationToken);
                }
            })
            .Append(_runChanged.Task)
            .ToList();
        try
        {
            await Task.WhenAny(waits).WaitAsync(wait, time, cancellationToken);
        }
        catch (TimeoutException)
        {
        }
    }

    /// <summary>Waits for the header to change or any unfinished part to change past <paramref name="afterVersion"/>.</summary>
    private async Task WaitAnyChangeAsync(PolicyRunRecord run, long afterVersion, TimeSpan wait, CancellationToken cancellationToken)
    {
        var waits = run.Parts
            .Where(p => !p.Done && p.Handoff.Count == 0)
            .Select(p => Part(p.Host).WaitChangeAsync(run.RunId, afterVersion, wait, cancellationToken))
            .Cast<Task>()
            .Append(_runChanged.Task)
            .ToList();
        try
        {
            await Task.WhenAny(waits).WaitAsync(wait, time, cancellationToken);
        }
        catch (TimeoutException)
        {
        }
    }
}
