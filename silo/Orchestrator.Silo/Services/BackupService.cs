using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Orchestrator.Api.V1;
using Orchestrator.Grains.Backups;
using Orchestrator.Grains.Placement;

namespace Orchestrator.Silo.Services;

/// <summary>orchestrator.v1.BackupService: runs on the VM grains of each host.</summary>
internal sealed class BackupService(IGrainFactory grains, IHostDirectory directory) : Api.V1.BackupService.BackupServiceBase
{
    public override async Task<StartBackupResponse> StartBackup(StartBackupRequest request, ServerCallContext context)
    {
        var (host, vm) = GrainKeys.ParseVm(request.Vm, "vm");
        var backup = new BackupRequest
        {
            Target = request.Target.Length > 0 ? request.Target : null,
            Quiesce = request.Quiesce switch
            {
                Api.V1.QuiesceMode.Unspecified or Api.V1.QuiesceMode.Off => Orchestrator.QuiesceMode.Off,
                Api.V1.QuiesceMode.Try => Orchestrator.QuiesceMode.Try,
                Api.V1.QuiesceMode.Required => Orchestrator.QuiesceMode.Required,
                _ => throw OrchestratorException.InvalidArgument("quiesce", $"{(int)request.Quiesce} is not a quiesce mode (off, try or required)"),
            },
            Verify = !request.SkipVerify,
            BandwidthBytesPerSecond = request.BandwidthBytesPerSecond,
            Retention = request.Retention is { } r ? new BackupRetention(r.KeepLast, r.KeepDaily, r.KeepWeekly, r.KeepMonthly) : null,
            Incremental = request.Incremental,
        };

        // Refused here, before any grain is called, and again by the grain (which any caller reaches).
        BackupRequestRules.Validate(backup);
        var run = await grains.GetGrain<IVirtualMachineGrain>(GrainKeys.Vm(host, vm)).StartBackupAsync(backup, context.CancellationToken);
        return new StartBackupResponse { Run = ToProto(run) };
    }

    public override async Task<GetBackupResponse> GetBackup(GetBackupRequest request, ServerCallContext context)
    {
        var (host, vm, runId) = BackupRunKeys.Parse(request.Key, "key");
        var run = await grains.GetGrain<IVirtualMachineGrain>(GrainKeys.Vm(host, vm)).GetBackupAsync(runId, context.CancellationToken);
        return new GetBackupResponse { Run = ToProto(run) };
    }

    public override async Task<ListBackupsResponse> ListBackups(ListBackupsRequest request, ServerCallContext context)
    {
        var ct = context.CancellationToken;
        var response = new ListBackupsResponse();
        if (request.Host.Length > 0)
        {
            GrainKeys.ValidateHost(request.Host);
        }

        if (request.Vm.Length > 0 && request.Host.Length > 0)
        {
            throw OrchestratorException.InvalidArgument("host", "give vm or host, not both");
        }

        if (request.Vm.Length > 0)
        {
            var (host, vm) = GrainKeys.ParseVm(request.Vm, "vm");
            response.Runs.AddRange((await grains.GetGrain<IVirtualMachineGrain>(GrainKeys.Vm(host, vm)).ListBackupsAsync(ct)).Select(ToProto));
            return response;
        }

        var scope = await FleetScope.ResolveAsync(grains, directory, request.Host, ct);
        response.UnavailableHosts.AddRange(scope.Unavailable);
        var runs = new List<BackupRunView>();
        foreach (var vm in await scope.VmsAsync(grains, ct))
        {
            runs.AddRange(await grains.GetGrain<IVirtualMachineGrain>(vm.Key).ListBackupsAsync(ct));
        }

        response.Runs.AddRange(runs.OrderByDescending(r => r.StartedAt).Select(ToProto));
        return response;
    }

    public override async Task WatchBackup(WatchBackupRequest request, IServerStreamWriter<WatchBackupResponse> responseStream, ServerCallContext context)
    {
        var (host, vm, runId) = BackupRunKeys.Parse(request.Key, "key");
        var grain = grains.GetGrain<IVirtualMachineGrain>(GrainKeys.Vm(host, vm));
        var run = await grain.GetBackupAsync(runId, context.CancellationToken);
        await responseStream.WriteAsync(new WatchBackupResponse { Run = ToProto(run) }, context.CancellationToken);
        while (!run.IsTerminal && !context.CancellationToken.IsCancellationRequested)
        {
            var next = await grain.WaitBackupAsync(runId, run.Version, TimeSpan.FromSeconds(15), context.CancellationToken);
            if (next.Version != run.Version || next.IsTerminal)
            {
                await responseStream.WriteAsync(new WatchBackupResponse { Run = ToProto(next) }, context.CancellationToken);
            }

            run = next;
        }
    }

    public override async Task<RestoreResponse> Restore(Api.V1.RestoreRequest request, ServerCallContext context)
    {
        // Validated before any grain is asked (a bad host name never reaches placement), and again by the grain.
        var restore = new Orchestrator.RestoreRequest(request.Key, request.NewName, request.Define, Host: request.Host.Length == 0 ? null : request.Host, Start: request.Start);
        var (source, _, _) = BackupRunKeys.Parse(request.Key, "key");
        var target = restore.Host ?? source;
        RestoreEngine.Validate(restore, target);

        // On the target host's silo, from the backup set alone: the source host's silo may be down.
        var result = await grains.GetGrain<IHostRestoreGrain>(target).RestoreAsync(restore, context.CancellationToken);
        var response = new RestoreResponse { NewName = result.NewName, Defined = result.Defined, Uuid = result.Uuid?.ToString() ?? "", Host = result.Host ?? target, Started = result.Started };
        response.Images.AddRange(result.Images);
        response.Changes.AddRange(result.Changes ?? []);
        return response;
    }

    public override async Task<VerifyBackupResponse> VerifyBackup(VerifyBackupRequest request, ServerCallContext context)
    {
        var (source, _, _) = BackupRunKeys.Parse(request.Key, "key");
        var target = request.Host.Length == 0 ? source : request.Host;
        GrainKeys.ValidateHost(target, "host");

        // On that host's silo, from the sets alone (its backup roots): the run's own host need not be up.
        var result = await grains.GetGrain<IHostRestoreGrain>(target).VerifyAsync(request.Key, context.CancellationToken);
        var response = new VerifyBackupResponse { Key = result.Key, Host = result.Host, Passed = result.Passed };
        foreach (var set in result.Sets)
        {
            var verified = new VerifiedBackupSet { Run = set.Run, SetPath = set.SetPath ?? "", Level = set.Level ?? "", ChainIndex = set.ChainIndex ?? -1, Passed = set.Passed, Error = set.Error ?? "" };
            verified.Checks.AddRange(set.Checks);
            response.Sets.Add(verified);
        }

        return response;
    }

    public override async Task<RepairOverlaysResponse> RepairOverlays(RepairOverlaysRequest request, ServerCallContext context)
    {
        var (host, vm) = GrainKeys.ParseVm(request.Vm, "vm");
        var repairs = await grains.GetGrain<IVirtualMachineGrain>(GrainKeys.Vm(host, vm)).RepairOverlaysAsync(request.DryRun, context.CancellationToken);
        var response = new RepairOverlaysResponse();
        response.Disks.AddRange(repairs.Select(r => new Api.V1.OverlayRepair
        {
            Target = r.Target,
            OverlayPath = r.OverlayPath,
            BasePath = r.BasePath ?? "",
            Run = r.RunId ?? "",
            Action = r.Action switch
            {
                Orchestrator.OverlayRepairAction.Committed => Api.V1.OverlayRepairAction.Committed,
                Orchestrator.OverlayRepairAction.WouldCommit => Api.V1.OverlayRepairAction.WouldCommit,
                _ => Api.V1.OverlayRepairAction.Refused,
            },
            Reason = r.Reason,
        }));
        return response;
    }

    internal static BackupRun ToProto(BackupRunView view)
    {
        var run = new BackupRun
        {
            Key = view.RunKey,
            Host = view.Host,
            Vm = view.Vm,
            Step = (Api.V1.BackupStep)((int)view.Step + 1),
            RollingBack = view.RollingBack,
            Error = view.Error ?? "",
            StartedAt = Timestamp.FromDateTimeOffset(view.StartedAt),
            BackupSetPath = view.BackupSetPath,
            QuiesceOutcome = view.QuiesceOutcome,
            FreezeMs = view.FreezeMilliseconds,
            TraceId = view.TraceId ?? "",
            Version = view.Version,
            Policy = view.Policy ?? "",
            PolicyVersion = view.PolicyVersion,
            PolicyRun = view.PolicyRun ?? "",
            Method = view.Method.Name(),
            Level = view.Level ?? "",
            Parent = view.Parent ?? "",
            LevelReason = view.LevelReason ?? "",
        };
        if (view.EndedAt is { } ended)
        {
            run.EndedAt = Timestamp.FromDateTimeOffset(ended);
        }

        run.Disks.AddRange(view.Disks.Select(d => new BackupDisk
        {
            Target = d.Target,
            BasePath = d.BasePath,
            Format = d.Format,
            OverlayPath = d.OverlayPath,
            BackupPath = d.BackupPath,
            BytesTotal = d.BytesTotal,
            BytesCopied = d.BytesCopied,
            Sha256 = d.Sha256 ?? "",
            Committed = d.Committed,
            Verified = d.Verified,
        }));
        run.Steps.AddRange(view.Steps.Select(s => new Api.V1.BackupStepRecord { Step = (Api.V1.BackupStep)((int)s.Step + 1), At = Timestamp.FromDateTimeOffset(s.At), Note = s.Note ?? "" }));
        run.LastTest = ToProto(view.LastTest);
        return run;
    }

    public override async Task<TestBackupResponse> TestBackup(TestBackupRequest request, ServerCallContext context)
    {
        var (host, vm, _) = BackupRunKeys.Parse(request.Key, "key");
        var timeout = request.Timeout is null ? TestRestoreRequest.DefaultTimeout : ToTimeSpan(request.Timeout, "timeout");
        var test = new TestRestoreRequest(request.Key, TestProbe.Parse(request.Probe, "probe"), timeout, request.Host.Length == 0 ? null : request.Host);

        // Refused here, before any grain is called, and again by the grain (which any caller reaches).
        test.Validate();
        var grain = grains.GetGrain<IVirtualMachineGrain>(GrainKeys.Vm(host, vm));
        var view = await grain.StartTestRestoreAsync(test, context.CancellationToken);

        // The test runs in the VM grain; this call only waits for it (its timeout, then clean-up, bound the wait).
        var giveUp = DateTimeOffset.UtcNow + timeout + TimeSpan.FromMinutes(3);
        while (!request.NoWait && !view.IsTerminal && DateTimeOffset.UtcNow < giveUp)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(250), context.CancellationToken);
            view = await grain.GetTestRestoreAsync(view.Id, context.CancellationToken);
        }

        return new TestBackupResponse { Test = ToProto(view) };
    }

    private static TimeSpan ToTimeSpan(Duration duration, string field)
    {
        if (duration.Seconds < 0 || duration.Nanos is < 0 or > 999_999_999 || duration.Seconds > (long)TestRestoreRequest.MaxTimeout.TotalSeconds)
        {
            throw OrchestratorException.InvalidArgument(field, $"{duration.Seconds}.{duration.Nanos:D9} s is out of range ({TestRestoreRequest.MinTimeout.TotalSeconds:0} s to {TestRestoreRequest.MaxTimeout.TotalHours:0} h)");
        }

        return duration.ToTimeSpan();
    }

    internal static TestRestore? ToProto(TestRestoreView? view)
    {
        if (view is null)
        {
            return null;
        }

        var test = new TestRestore
        {
            Id = view.Id,
            Key = view.RunKey,
            Host = view.Host,
            Domain = view.Domain,
            Probe = view.Probe,
            Outcome = view.Outcome switch
            {
                TestRestoreOutcome.Passed => Api.V1.TestRestoreOutcome.Passed,
                TestRestoreOutcome.Failed => Api.V1.TestRestoreOutcome.Failed,
                _ => Api.V1.TestRestoreOutcome.Running,
            },
            StartedAt = Timestamp.FromDateTimeOffset(view.StartedAt),
            RestoreSeconds = view.RestoreSeconds,
            BootSeconds = view.BootSeconds,
            Reason = view.Reason,
            CleanedUp = view.CleanedUp,
            Policy = view.Policy ?? "",
        };
        if (view.EndedAt is { } ended)
        {
            test.EndedAt = Timestamp.FromDateTimeOffset(ended);
        }

        return test;
    }
}
