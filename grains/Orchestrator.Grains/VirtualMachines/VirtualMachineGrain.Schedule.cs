using System.Diagnostics;
using Orchestrator.Grains.Checkpoints;
using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.VirtualMachines;

/// <summary>
/// The checkpoint schedule. The next due time lives in persisted state; nothing else decides when to run. A reminder
/// (1-minute period; in memory on an embedded silo, in PostgreSQL in a cluster) and a grain timer armed for the due
/// time (sub-minute precision while the grain is active) only wake the grain, which then asks the planner. On
/// activation a due time that passed while the silo was down runs once (catch-up once), and the next due time is
/// the first one after now.
/// </summary>
internal sealed partial class VirtualMachineGrain : IRemindable
{
    internal const string ScheduleReminderName = "checkpoint-schedule";
    private static readonly TimeSpan ReminderPeriod = TimeSpan.FromMinutes(1);

    private IGrainTimer? _scheduleTimer;

    public async Task<CheckpointScheduleView> SetCheckpointScheduleAsync(CheckpointSchedule schedule, CancellationToken cancellationToken = default)
    {
        using var activity = Telemetry.Source.StartActivity("checkpoint.schedule.set");
        activity?.SetTag("host", Key.Host);
        activity?.SetTag("vm", Key.Vm);
        RequireKnown();
        ParsedSchedule parsed;
        try
        {
            parsed = planner.Parse(schedule);
        }
        catch (OrchestratorException e)
        {
            activity?.SetStatus(ActivityStatusCode.Error, e.Message);
            CheckpointMetrics.RecordFailure(Key.Host, Key.Vm, "schedule", e.Field ?? e.Code.ToString());
            throw;
        }

        if (state.State.Disks.FirstOrDefault(d => d.Format != "qcow2") is { } raw)
        {
            // Refused up front rather than at every run (the run re-checks the live domain anyway).
            CheckpointMetrics.RecordFailure(Key.Host, Key.Vm, "schedule", "RAW_DISK");
            throw OrchestratorException.FailedPrecondition(
                "RAW_DISK",
                $"VM '{VmKey}' cannot be scheduled for internal checkpoints: disk {raw.Target} ({raw.SourcePath}) is {raw.Format}. "
                + "Internal checkpoints need qcow2; use a live backup, or convert the disk");
        }

        var previous = state.State.CheckpointSchedule;
        var source = parsed.Source;
        var next = planner.FirstDue(parsed, VmKey);
        state.State.CheckpointSchedule = new CheckpointScheduleState
        {
            Cron = source.Cron,
            TimeZone = source.TimeZone,
            Jitter = source.Jitter,
            KeepLast = source.Retention.KeepLast,
            Hourly = source.Retention.Hourly,
            Daily = source.Retention.Daily,
            Weekly = source.Retention.Weekly,
            Monthly = source.Retention.Monthly,
            NextDueAt = next,
            UpdatedAt = planner.Now,
            Runs = previous?.Runs ?? 0,
            LastRun = previous?.LastRun,
            RecentRuns = previous?.RecentRuns ?? [],
        };
        await _writes.WriteAsync(cancellationToken);
        await EnsureScheduleReminderAsync(cancellationToken);
        ArmScheduleTimer();
        activity?.SetTag("cron", source.Cron);
        activity?.SetTag("time_zone", source.TimeZone);
        activity?.SetTag("next_due", next.ToString("O"));
        LogScheduleSet(logger, VmKey, source.Cron, source.TimeZone, next);
        return ScheduleView()!;
    }

    public Task<CheckpointScheduleView?> GetCheckpointScheduleAsync(CancellationToken cancellationToken = default)
    {
        RequireKnown();
        return Task.FromResult(ScheduleView());
    }

    public async Task<bool> DeleteCheckpointScheduleAsync(CancellationToken cancellationToken = default)
    {
        RequireKnown();
        if (state.State.CheckpointSchedule is null)
        {
            return false;
        }

        state.State.CheckpointSchedule = null;
        await _writes.WriteAsync(cancellationToken);
        StopScheduleTimer();
        await UnregisterScheduleReminderAsync(cancellationToken);
        LogScheduleDeleted(logger, VmKey);
        return true;
    }

    public async Task ReceiveReminder(string reminderName, TickStatus status)
    {
        if (reminderName != ScheduleReminderName)
        {
            return;
        }

        if (state.State.CheckpointSchedule is null)
        {
            // A leftover (the schedule was removed while the reminder service was unreachable).
            await UnregisterScheduleReminderAsync(CancellationToken.None);
            return;
        }

        await RunDueScheduleAsync(CancellationToken.None);
    }

    /// <summary>On activation: re-register the reminder (an embedded silo keeps reminders in memory only) and arm the timer; a due time in the past fires at once.</summary>
    private async Task ActivateScheduleAsync(CancellationToken cancellationToken)
    {
        if (state.State.CheckpointSchedule is not { } schedule)
        {
            return;
        }

        if (planner.Now >= schedule.NextDueAt)
        {
            LogScheduleCatchUp(logger, VmKey, schedule.NextDueAt);
        }

        try
        {
            await EnsureScheduleReminderAsync(cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // The timer still runs the schedule while this activation lives; the next activation tries again.
            LogReminderFailed(logger, VmKey, e.Message);
        }

        ArmScheduleTimer();
    }

    /// <summary>Runs the scheduled checkpoint when it is due (once, however many due times passed), prunes, persists the next due time.</summary>
    private async Task RunDueScheduleAsync(CancellationToken cancellationToken)
    {
        if (state.State.CheckpointSchedule is not { } schedule)
        {
            return;
        }

        ParsedSchedule parsed;
        try
        {
            parsed = planner.Parse(ToContract(schedule));
        }
        catch (OrchestratorException e)
        {
            // Only when the machine changed under a stored schedule (e.g. its time zone data is gone).
            LogScheduleInvalid(logger, VmKey, e.Message);
            return;
        }

        var decision = planner.Decide(parsed, VmKey, schedule.NextDueAt);
        if (!decision.Run)
        {
            ArmScheduleTimer();
            return;
        }

        using var activity = Telemetry.Source.StartActivity("checkpoint.schedule.run");
        activity?.SetTag("host", Key.Host);
        activity?.SetTag("vm", Key.Vm);
        activity?.SetTag("due", decision.DueAt.ToString("O"));
        activity?.SetTag("skipped_slots", decision.SkippedSlots);
        var run = new ScheduledRunRecord { At = decision.DecidedAt, DueAt = decision.DueAt, SkippedSlots = decision.SkippedSlots };
        try
        {
            var record = await CreateCheckpointCoreAsync(ScheduledName(run.At), CheckpointOrigin.Schedule, cancellationToken);
            run.Checkpoint = record.Name;
            activity?.SetTag("checkpoint", record.Name);
            run.Pruned = await PruneScheduledAsync(parsed, run, cancellationToken);
        }
        catch (OrchestratorException e)
        {
            // Already counted and logged by the operation; a failed run is recorded and the schedule moves on.
            run.Error = e.Message;
            activity?.SetStatus(ActivityStatusCode.Error, e.Message);
        }

        schedule.Record(run);
        schedule.NextDueAt = decision.NextDueAt;
        await _writes.WriteAsync(CancellationToken.None);
        LogScheduleRan(logger, VmKey, run.Checkpoint ?? "-", decision.DueAt, decision.SkippedSlots, run.Pruned.Count, decision.NextDueAt, run.Error ?? "ok");
        ArmScheduleTimer();
    }

    /// <summary>Deletes the scheduled checkpoints retention no longer keeps. Manual and external checkpoints are never pruned.</summary>
    private async Task<List<string>> PruneScheduledAsync(ParsedSchedule parsed, ScheduledRunRecord run, CancellationToken cancellationToken)
    {
        var scheduled = state.State.Checkpoints
            .Where(c => c.Origin == CheckpointOrigin.Schedule)
            .Select(c => new RetainedCheckpoint(c.Name, c.CreatedAt))
            .ToList();
        return await PruneCheckpointsAsync(scheduled, parsed.Retention, parsed.Zone, error => run.Error = error, cancellationToken);
    }

    /// <summary>
    /// Deletes the checkpoints among <paramref name="candidates"/> that the retention no longer keeps; one already gone
    /// is forgotten, any other failure is reported through <paramref name="onError"/> and the rest go on.
    /// </summary>
    private async Task<List<string>> PruneCheckpointsAsync(
        IReadOnlyList<RetainedCheckpoint> candidates, RetentionPolicy retention, TimeZoneInfo zone, Action<string> onError, CancellationToken cancellationToken)
    {
        var pruned = new List<string>();
        foreach (var checkpoint in CheckpointSchedulePlanner.SelectForPruning(candidates, retention, zone))
        {
            try
            {
                await DeleteCheckpointCoreAsync(checkpoint.Name, PruneKind, cancellationToken);
                pruned.Add(checkpoint.Name);
            }
            catch (OrchestratorException e) when (e.Code == ErrorCode.NotFound)
            {
                // Already gone (deleted by hand): forget it.
                state.State.Checkpoints.RemoveAll(c => c.Name == checkpoint.Name);
                pruned.Add(checkpoint.Name);
            }
            catch (OrchestratorException e)
            {
                onError($"pruning {checkpoint.Name} failed: {e.Message}");
            }
        }

        return pruned;
    }

    /// <summary>auto-yyyyMMdd-HHmmss (UTC), made unique against what the VM already has.</summary>
    private string ScheduledName(DateTimeOffset at)
    {
        var name = CheckpointNames.ForTime(CheckpointNames.SchedulePrefix, at);
        var candidate = name;
        for (var i = 2; FindRecord(candidate) is not null; i++)
        {
            candidate = $"{name}-{i}";
        }

        return candidate;
    }

    private async Task EnsureScheduleReminderAsync(CancellationToken cancellationToken) =>
        await this.RegisterOrUpdateReminder(ScheduleReminderName, ReminderPeriod, ReminderPeriod, cancellationToken);

    private async Task UnregisterScheduleReminderAsync(CancellationToken cancellationToken)
    {
        if (await this.GetReminder(ScheduleReminderName, cancellationToken) is { } reminder)
        {
            await this.UnregisterReminder(reminder, cancellationToken);
        }
    }

    /// <summary>Arms the grain timer for the persisted due time (at most the planner's maximum wait ahead; it re-arms itself).</summary>
    private void ArmScheduleTimer()
    {
        if (state.State.CheckpointSchedule is not { } schedule)
        {
            StopScheduleTimer();
            return;
        }

        var wait = planner.TimerWait(schedule.NextDueAt);
        if (_scheduleTimer is null)
        {
            _scheduleTimer = this.RegisterGrainTimer(
                static (grain, ct) => grain.RunDueScheduleAsync(ct),
                this,
                new GrainTimerCreationOptions(wait, Timeout.InfiniteTimeSpan) { Interleave = false, KeepAlive = false });
        }
        else
        {
            _scheduleTimer.Change(wait, Timeout.InfiniteTimeSpan);
        }
    }

    private void StopScheduleTimer()
    {
        _scheduleTimer?.Dispose();
        _scheduleTimer = null;
    }

    private CheckpointScheduleView? ScheduleView()
    {
        if (state.State.CheckpointSchedule is not { } s)
        {
            return null;
        }

        var (host, vm) = Key;
        var scheduled = state.State.Checkpoints.Where(c => c.Origin == CheckpointOrigin.Schedule).Select(c => c.Name).ToList();
        return new CheckpointScheduleView(host, vm, ToContract(s), s.NextDueAt, s.LastRun is { } last ? ToView(last) : null, s.UpdatedAt, s.Runs, scheduled, [.. s.RecentRuns.Select(ToView)]);

        static ScheduledRunView ToView(ScheduledRunRecord r) => new(r.At, r.DueAt, r.Checkpoint, r.SkippedSlots, r.Error, [.. r.Pruned]);
    }

    private static CheckpointSchedule ToContract(CheckpointScheduleState s) =>
        new(s.Cron, s.TimeZone, s.Jitter, new RetentionPolicy(s.KeepLast, s.Hourly, s.Daily, s.Weekly, s.Monthly));

    /// <summary>
    /// A checkpoint operation that holds the lock in persisted state while this activation is new was cut short (the
    /// silo died mid-call): it is not running any more. Adopt a checkpoint it managed to create, forget one it
    /// managed to delete, and free the VM.
    /// </summary>
    private async Task RecoverCheckpointOperationAsync(CancellationToken cancellationToken)
    {
        if (state.State.Operation is not { } op || !op.Kind.StartsWith("checkpoint-", StringComparison.Ordinal))
        {
            return;
        }

        try
        {
            var found = (await hypervisor.ListInternalSnapshotsAsync(DomainName, cancellationToken)).FirstOrDefault(s => s.Name == op.Id);
            if (op.Kind is CreateKind or ScheduledCreateKind && found is not null && FindRecord(op.Id) is null)
            {
                var origin = op.Kind == ScheduledCreateKind ? CheckpointOrigin.Schedule : CheckpointOrigin.Manual;
                state.State.Checkpoints.Add(new CheckpointRecord
                {
                    Name = found.Name,
                    CreatedAt = found.CreatedAt,
                    WithMemory = found.HasMemory,
                    Origin = origin,
                    PauseSource = PauseSource.Unknown,
                    StateAtCheckpoint = (VmPowerState)found.StateAtSnapshot,
                });
                if (origin == CheckpointOrigin.Schedule && state.State.CheckpointSchedule is { } schedule && found.CreatedAt >= schedule.NextDueAt - TimeSpan.FromSeconds(1))
                {
                    // That checkpoint served the persisted due time: do not take another one for it.
                    var parsed = planner.Parse(ToContract(schedule));
                    schedule.Record(new ScheduledRunRecord { At = found.CreatedAt, DueAt = schedule.NextDueAt, Checkpoint = found.Name });
                    schedule.NextDueAt = CheckpointSchedulePlanner.NextDueAfter(parsed, VmKey, planner.Now);
                }
            }
            else if (op.Kind is DeleteKind or PruneKind && found is null)
            {
                state.State.Checkpoints.RemoveAll(c => c.Name == op.Id);
            }
        }
        catch (Exception e) when (e is HypervisorException or OrchestratorException)
        {
            LogRecoveryCheckFailed(logger, VmKey, op.Kind, op.Id, e.Message);
        }

        LogOperationRecovered(logger, VmKey, op.Kind, op.Id, op.StartedAt);
        state.State.Operation = null;
        await _writes.WriteAsync(cancellationToken);
    }

    /// <summary>Called on activation: recover a cut-short checkpoint operation, then resume the schedule. Never fails the activation.</summary>
    private async Task ActivateCheckpointsAsync(CancellationToken cancellationToken)
    {
        if (!state.State.Known)
        {
            return;
        }

        try
        {
            await RecoverCheckpointOperationAsync(cancellationToken);
            await ActivateScheduleAsync(cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            LogActivationFailed(logger, VmKey, e.Message);
        }
    }
}
