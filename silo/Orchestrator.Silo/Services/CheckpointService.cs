using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Orchestrator.Api.V1;
using Orchestrator.Grains.Placement;

namespace Orchestrator.Silo.Services;

/// <summary>orchestrator.v1.CheckpointService: internal checkpoints and their schedules, served by the VM grains.</summary>
internal sealed class CheckpointService(IGrainFactory grains, IHostDirectory directory) : Api.V1.CheckpointService.CheckpointServiceBase
{
    public override async Task<CreateCheckpointResponse> CreateCheckpoint(CreateCheckpointRequest request, ServerCallContext context)
    {
        var vm = Vm(request.Key);
        string? name = request.Name.Length == 0 ? null : CheckpointNames.Validate(request.Name);
        var created = await vm.CreateCheckpointAsync(name, context.CancellationToken);
        return new CreateCheckpointResponse { Checkpoint = ToProto(created) };
    }

    public override async Task<ListCheckpointsResponse> ListCheckpoints(ListCheckpointsRequest request, ServerCallContext context)
    {
        var checkpoints = await Vm(request.Key).ListCheckpointsAsync(context.CancellationToken);
        var response = new ListCheckpointsResponse();
        response.Checkpoints.AddRange(checkpoints.Select(ToProto));
        return response;
    }

    public override async Task<RevertCheckpointResponse> RevertCheckpoint(RevertCheckpointRequest request, ServerCallContext context)
    {
        var vm = Vm(request.Key);
        CheckpointNames.Validate(request.Name);
        var target = request.Target switch
        {
            Api.V1.RevertTarget.Unspecified => CheckpointRevertTarget.Default,
            Api.V1.RevertTarget.Running => CheckpointRevertTarget.Running,
            Api.V1.RevertTarget.Paused => CheckpointRevertTarget.Paused,
            _ => throw OrchestratorException.InvalidArgument("target", $"{(int)request.Target} is not a revert target (REVERT_TARGET_UNSPECIFIED, _RUNNING or _PAUSED)"),
        };
        var result = await vm.RevertCheckpointAsync(request.Name, target, context.CancellationToken);
        return new RevertCheckpointResponse { Name = result.Name, PowerState = (PowerState)(int)result.PowerState, DurationMs = result.Duration.TotalMilliseconds };
    }

    public override async Task<DeleteCheckpointResponse> DeleteCheckpoint(DeleteCheckpointRequest request, ServerCallContext context)
    {
        var vm = Vm(request.Key);
        CheckpointNames.Validate(request.Name);
        await vm.DeleteCheckpointAsync(request.Name, context.CancellationToken);
        return new DeleteCheckpointResponse();
    }

    public override async Task<SetCheckpointScheduleResponse> SetCheckpointSchedule(SetCheckpointScheduleRequest request, ServerCallContext context)
    {
        var vm = Vm(request.Key);
        var schedule = request.Schedule ?? throw OrchestratorException.InvalidArgument("schedule", "a schedule (cron, time_zone, jitter) is required");
        TimeSpan jitter;
        try
        {
            jitter = schedule.Jitter?.ToTimeSpan() ?? TimeSpan.Zero;
        }
        catch (InvalidOperationException e)
        {
            throw OrchestratorException.InvalidArgument("schedule.jitter", e.Message);
        }

        var retention = request.Retention ?? new Api.V1.RetentionPolicy();
        var contract = new CheckpointSchedule(
            schedule.Cron,
            schedule.TimeZone,
            jitter,
            new Orchestrator.RetentionPolicy(retention.KeepLast, retention.Hourly, retention.Daily, retention.Weekly, retention.Monthly));
        var view = await vm.SetCheckpointScheduleAsync(contract, context.CancellationToken);
        return new SetCheckpointScheduleResponse { Schedule = ToProto(view) };
    }

    public override async Task<GetCheckpointScheduleResponse> GetCheckpointSchedule(GetCheckpointScheduleRequest request, ServerCallContext context)
    {
        var (host, vm) = GrainKeys.ParseVm(request.Key);
        var view = await grains.GetGrain<IVirtualMachineGrain>(GrainKeys.Vm(host, vm)).GetCheckpointScheduleAsync(context.CancellationToken)
            ?? throw new OrchestratorException(ErrorCode.NotFound, $"VM {OrchestratorException.Quote(request.Key)} has no checkpoint schedule", reason: "NO_SCHEDULE");
        return new GetCheckpointScheduleResponse { Schedule = ToProto(view) };
    }

    public override async Task<ListCheckpointSchedulesResponse> ListCheckpointSchedules(ListCheckpointSchedulesRequest request, ServerCallContext context)
    {
        var ct = context.CancellationToken;
        var scope = await FleetScope.ResolveAsync(grains, directory, request.Host, ct);
        var response = new ListCheckpointSchedulesResponse();
        response.UnavailableHosts.AddRange(scope.Unavailable);
        var views = await Task.WhenAll((await scope.VmsAsync(grains, ct))
            .Select(v => grains.GetGrain<IVirtualMachineGrain>(v.Key).GetCheckpointScheduleAsync(ct)));
        response.Schedules.AddRange(views.OfType<CheckpointScheduleView>().Select(ToProto));

        return response;
    }

    public override async Task<DeleteCheckpointScheduleResponse> DeleteCheckpointSchedule(DeleteCheckpointScheduleRequest request, ServerCallContext context)
    {
        var deleted = await Vm(request.Key).DeleteCheckpointScheduleAsync(context.CancellationToken);
        return new DeleteCheckpointScheduleResponse { Deleted = deleted };
    }

    internal static Checkpoint ToProto(CheckpointView view)
    {
        var checkpoint = new Checkpoint
        {
            Name = view.Name,
            CreatedAt = Timestamp.FromDateTimeOffset(view.CreatedAt),
            WithMemory = view.WithMemory,
            PauseSource = view.PauseSource switch
            {
                Orchestrator.PauseSource.None => Api.V1.PauseSource.None,
                Orchestrator.PauseSource.Events => Api.V1.PauseSource.Events,
                Orchestrator.PauseSource.CallDuration => Api.V1.PauseSource.CallDuration,
                _ => Api.V1.PauseSource.Unknown,
            },
            Origin = view.Origin switch
            {
                Orchestrator.CheckpointOrigin.Manual => Api.V1.CheckpointOrigin.Manual,
                Orchestrator.CheckpointOrigin.Schedule => Api.V1.CheckpointOrigin.Schedule,
                Orchestrator.CheckpointOrigin.Policy => Api.V1.CheckpointOrigin.Policy,
                _ => Api.V1.CheckpointOrigin.External,
            },
            State = (PowerState)(int)view.StateAtCheckpoint,
        };
        if (view.SizeBytes is { } size)
        {
            checkpoint.SizeBytes = size;
        }

        if (view.Pause is { } pause)
        {
            checkpoint.PauseMs = pause.TotalMilliseconds;
        }

        if (view.Duration is { } duration)
        {
            checkpoint.DurationMs = duration.TotalMilliseconds;
        }

        return checkpoint;
    }

    internal static CheckpointScheduleStatus ToProto(CheckpointScheduleView view)
    {
        var schedule = view.Schedule;
        var status = new CheckpointScheduleStatus
        {
            Key = view.Key,
            Schedule = new Api.V1.CheckpointSchedule { Cron = schedule.Cron, TimeZone = schedule.TimeZone },
            Retention = new Api.V1.RetentionPolicy
            {
                KeepLast = schedule.Retention.KeepLast,
                Hourly = schedule.Retention.Hourly,
                Daily = schedule.Retention.Daily,
                Weekly = schedule.Retention.Weekly,
                Monthly = schedule.Retention.Monthly,
            },
            NextDueAt = Timestamp.FromDateTimeOffset(view.NextDueAt),
            UpdatedAt = Timestamp.FromDateTimeOffset(view.UpdatedAt),
            Runs = view.Runs,
        };
        if (schedule.Jitter > TimeSpan.Zero)
        {
            status.Schedule.Jitter = Duration.FromTimeSpan(schedule.Jitter);
        }

        status.ScheduledCheckpoints.AddRange(view.ScheduledCheckpoints);
        if (view.LastRun is { } run)
        {
            status.LastRun = ToProto(run);
        }

        status.RecentRuns.AddRange(view.RecentRuns.Select(ToProto));
        return status;
    }

    private static ScheduledRun ToProto(ScheduledRunView run)
    {
        var proto = new ScheduledRun
        {
            At = Timestamp.FromDateTimeOffset(run.At),
            DueAt = Timestamp.FromDateTimeOffset(run.DueAt),
            Checkpoint = run.Checkpoint ?? "",
            SkippedSlots = run.SkippedSlots,
            Error = run.Error ?? "",
        };
        proto.Pruned.AddRange(run.Pruned);
        return proto;
    }

    private IVirtualMachineGrain Vm(string key)
    {
        var (host, vm) = GrainKeys.ParseVm(key);
        return grains.GetGrain<IVirtualMachineGrain>(GrainKeys.Vm(host, vm));
    }
}
