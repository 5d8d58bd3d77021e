using Google.Protobuf.WellKnownTypes;
using Contract = Orchestrator;
using V1 = Orchestrator.Api.V1;

namespace Orchestrator.Silo.Services;

/// <summary>
/// Policies, runs and compliance between orchestrator.v1 messages and the grain contracts. Unset proto fields take
/// the contract's defaults (<see cref="Contract.PolicySpec"/>), so defaults live in one place; values the contract
/// cannot hold are InvalidArgument naming the field by its path in the policy file.
/// </summary>
internal static class PolicyMapper
{
    private static readonly Contract.PolicySpec Defaults = new();

    public static Contract.PolicySpec ToContract(V1.PolicySpec? spec)
    {
        if (spec is null)
        {
            throw OrchestratorException.InvalidArgument("spec", "a policy spec is required");
        }

        return new Contract.PolicySpec
        {
            Name = spec.Name,
            Kind = spec.Kind switch
            {
                V1.PolicyKind.LiveBackup => Contract.PolicyKind.LiveBackup,
                V1.PolicyKind.Checkpoint => Contract.PolicyKind.Checkpoint,
                V1.PolicyKind.Unspecified => throw OrchestratorException.InvalidArgument("kind", "a kind is required: live-backup or checkpoint"),
                _ => throw OrchestratorException.InvalidArgument("kind", $"{(int)spec.Kind} is not a policy kind (live-backup or checkpoint)"),
            },
            Description = spec.Description,
            Selector = spec.Selector is { } selector
                ? new Contract.PolicySelector
                {
                    Hosts = [.. selector.Hosts],
                    Vms = [.. selector.Vms],
                    Labels = new Dictionary<string, string>(selector.Labels, StringComparer.Ordinal),
                }
                : Defaults.Selector,
            Schedule = spec.Schedule is { } schedule
                ? new Contract.PolicySchedule(schedule.Cron, schedule.TimeZone.Length > 0 ? schedule.TimeZone : "UTC")
                : null,
            Retention = spec.Retention is { } retention
                ? new Contract.RetentionPolicy(retention.KeepLast, retention.Hourly, retention.Daily, retention.Weekly, retention.Monthly)
                : Defaults.Retention,
            Target = spec.Target.Length > 0 ? spec.Target : null,
            Quiesce = spec.Quiesce switch
            {
                V1.QuiesceMode.Unspecified or V1.QuiesceMode.Off => Contract.QuiesceMode.Off,
                V1.QuiesceMode.Try => Contract.QuiesceMode.Try,
                V1.QuiesceMode.Required => Contract.QuiesceMode.Required,
                _ => throw OrchestratorException.InvalidArgument("quiesce", $"{(int)spec.Quiesce} is not a quiesce mode (off, try or required)"),
            },
            Verify = spec.HasVerify ? spec.Verify : Defaults.Verify,
            BandwidthBytesPerSecond = spec.BandwidthBytesPerSecond,
            Concurrency = spec.Concurrency is { } concurrency
                ? new Contract.PolicyConcurrency(
                    concurrency.HasPerHost ? concurrency.PerHost : Defaults.Concurrency.PerHost,
                    concurrency.HasFleet ? concurrency.Fleet : Defaults.Concurrency.Fleet)
                : Defaults.Concurrency,
            Rpo = ToTimeSpan(spec.Rpo, "rpo"),
            TestRestore = spec.TestRestore is { } test
                ? new Contract.TestRestoreSpec(
                    test.EveryRuns,
                    test.Every is null ? null : ToTimeSpan(test.Every, "test_restore.every"),
                    Contract.TestProbe.Parse(test.Probe, "test_restore.probe"),
                    test.Rto is null ? null : ToTimeSpan(test.Rto, "test_restore.rto"),
                    test.Timeout is null ? null : ToTimeSpan(test.Timeout, "test_restore.timeout"))
                : null,
            Level = spec.Level switch
            {
                "" or "full" => Contract.BackupLevel.Full,
                "auto" => Contract.BackupLevel.Auto,
                _ => throw OrchestratorException.InvalidArgument("level", "is not a level (full or auto)"),
            },
            FullEveryRuns = spec.FullEveryRuns,
            FullEvery = spec.FullEvery is null ? null : ToTimeSpan(spec.FullEvery, "full_every"),
        };
    }

    public static V1.PolicySpec ToProto(Contract.PolicySpec spec)
    {
        var proto = new V1.PolicySpec
        {
            Name = spec.Name,
            Kind = ToProto(spec.Kind),
            Description = spec.Description,
            Selector = new V1.PolicySelector { Hosts = { spec.Selector.Hosts }, Vms = { spec.Selector.Vms } },
            Retention = new V1.PolicyRetention
            {
                KeepLast = spec.Retention.KeepLast,
                Hourly = spec.Retention.Hourly,
                Daily = spec.Retention.Daily,
                Weekly = spec.Retention.Weekly,
                Monthly = spec.Retention.Monthly,
            },
            Target = spec.Target ?? "",
            Quiesce = spec.Quiesce switch
            {
                Contract.QuiesceMode.Try => V1.QuiesceMode.Try,
                Contract.QuiesceMode.Required => V1.QuiesceMode.Required,
                _ => V1.QuiesceMode.Off,
            },
            Verify = spec.Verify,
            BandwidthBytesPerSecond = spec.BandwidthBytesPerSecond,
            Concurrency = ToProto(spec.Concurrency),
            Rpo = Duration.FromTimeSpan(spec.Rpo),
            Level = spec.Level == Contract.BackupLevel.Auto ? "auto" : "full",
            FullEveryRuns = spec.FullEveryRuns,
            FullEvery = spec.FullEvery is { } fullEvery ? Duration.FromTimeSpan(fullEvery) : null,
        };
        if (spec.TestRestore is { } test)
        {
            proto.TestRestore = new V1.PolicyTestRestore
            {
                EveryRuns = test.EveryRuns,
                Every = test.Every is { } every ? Duration.FromTimeSpan(every) : null,
                Probe = test.Probe.ToString(),
                Rto = test.Rto is { } rto ? Duration.FromTimeSpan(rto) : null,
                Timeout = test.Timeout is { } timeout ? Duration.FromTimeSpan(timeout) : null,
            };
        }

        foreach (var (key, value) in spec.Selector.Labels)
        {
            proto.Selector.Labels[key] = value;
        }

        if (spec.Schedule is { } schedule)
        {
            proto.Schedule = new V1.PolicySchedule { Cron = schedule.Cron, TimeZone = schedule.TimeZone };
        }

        return proto;
    }

    public static V1.Policy ToProto(Contract.PolicyView view)
    {
        var policy = new V1.Policy
        {
            Spec = ToProto(view.Spec),
            Version = view.Version,
            CreatedAt = Timestamp.FromDateTimeOffset(view.CreatedAt),
            UpdatedAt = Timestamp.FromDateTimeOffset(view.UpdatedAt),
            NextRunAt = ToTimestamp(view.NextRunAt),
            LastRun = view.LastRun is { } run ? ToProto(run) : null,
        };
        policy.PendingRetries.AddRange(view.PendingRetries);
        return policy;
    }

    public static V1.PolicyRun ToProto(Contract.PolicyRunView run)
    {
        var proto = new V1.PolicyRun
        {
            RunId = run.RunId,
            Policy = run.Policy,
            PolicyVersion = run.PolicyVersion,
            Kind = ToProto(run.Kind),
            Trigger = run.Trigger switch
            {
                Contract.PolicyRunTrigger.Manual => V1.PolicyRunTrigger.Manual,
                Contract.PolicyRunTrigger.Schedule => V1.PolicyRunTrigger.Schedule,
                Contract.PolicyRunTrigger.Retry => V1.PolicyRunTrigger.Retry,
                _ => V1.PolicyRunTrigger.Unspecified,
            },
            RetryOf = run.RetryOf ?? "",
            State = run.State switch
            {
                Contract.PolicyRunState.Running => V1.PolicyRunState.Running,
                Contract.PolicyRunState.Completed => V1.PolicyRunState.Completed,
                Contract.PolicyRunState.Partial => V1.PolicyRunState.Partial,
                Contract.PolicyRunState.Failed => V1.PolicyRunState.Failed,
                _ => V1.PolicyRunState.Unspecified,
            },
            StartedAt = Timestamp.FromDateTimeOffset(run.StartedAt),
            EndedAt = ToTimestamp(run.EndedAt),
            Concurrency = ToProto(run.Concurrency),
            TraceId = run.TraceId ?? "",
            Version = run.Version,
            Error = run.Error ?? "",
        };
        proto.Targets.AddRange(run.Targets.Select(ToProto));
        return proto;
    }

    public static V1.PolicyRunCounts ToProto(Contract.PolicyRunCounts counts)
    {
        ArgumentNullException.ThrowIfNull(counts);
        return new()
        {
            Total = counts.Total,
            Pending = counts.Pending,
            Running = counts.Running,
            Succeeded = counts.Succeeded,
            Failed = counts.Failed,
            Skipped = counts.Skipped,
        };
    }

    public static V1.PolicyTarget ToProto(Contract.PolicyTargetView target) => new()
    {
        Host = target.Host,
        Vm = target.Vm,
        Status = target.Status switch
        {
            Contract.PolicyTargetStatus.Pending => V1.PolicyTargetStatus.Pending,
            Contract.PolicyTargetStatus.Running => V1.PolicyTargetStatus.Running,
            Contract.PolicyTargetStatus.Succeeded => V1.PolicyTargetStatus.Succeeded,
            Contract.PolicyTargetStatus.Failed => V1.PolicyTargetStatus.Failed,
            Contract.PolicyTargetStatus.Skipped => V1.PolicyTargetStatus.Skipped,
            _ => V1.PolicyTargetStatus.Unspecified,
        },
        BackupRun = target.BackupRun ?? "",
        Checkpoint = target.Checkpoint ?? "",
        Reason = target.Reason ?? "",
        AdmittedAt = ToTimestamp(target.AdmittedAt),
        ReleasedAt = ToTimestamp(target.ReleasedAt),
        Attempts = target.Attempts,
    };

    public static V1.VmCompliance ToProto(Contract.VmCompliance vm)
    {
        var proto = new V1.VmCompliance
        {
            Host = vm.Host,
            Vm = vm.Vm,
            Present = vm.Present,
            Status = ToProto(vm.Status),
            LastBackupAt = ToTimestamp(vm.LastBackupAt),
            LastCheckpointAt = ToTimestamp(vm.LastCheckpointAt),
            LastProvenRestoreAt = ToTimestamp(vm.LastProvenRestoreAt),
            RtoMissed = vm.RtoMissed,
        };
        if (vm.LastProvenBootSeconds is { } boot)
        {
            proto.LastProvenBootSeconds = boot;
        }

        proto.Policies.AddRange(vm.Policies.Select(p => new V1.PolicyCompliance
        {
            Policy = p.Policy,
            Kind = ToProto(p.Kind),
            Version = p.Version,
            LastGoodAt = ToTimestamp(p.LastGoodAt),
            Rpo = Duration.FromTimeSpan(p.Rpo),
            Status = ToProto(p.Status),
            Rto = p.Rto is { } rto ? Duration.FromTimeSpan(rto) : null,
            RtoMissed = p.RtoMissed,
        }));
        return proto;
    }

    public static V1.ComplianceStatus ToProto(Contract.ComplianceStatus status) => status switch
    {
        Contract.ComplianceStatus.Ok => V1.ComplianceStatus.Ok,
        Contract.ComplianceStatus.OutOfRpo => V1.ComplianceStatus.OutOfRpo,
        Contract.ComplianceStatus.Never => V1.ComplianceStatus.Never,
        Contract.ComplianceStatus.Unprotected => V1.ComplianceStatus.Unprotected,
        _ => V1.ComplianceStatus.Unspecified,
    };

    /// <summary>A status filter of a request: null for none (unspecified).</summary>
    public static Contract.ComplianceStatus? ToContract(V1.ComplianceStatus status, string field) => status switch
    {
        V1.ComplianceStatus.Unspecified => null,
        V1.ComplianceStatus.Ok => Contract.ComplianceStatus.Ok,
        V1.ComplianceStatus.OutOfRpo => Contract.ComplianceStatus.OutOfRpo,
        V1.ComplianceStatus.Never => Contract.ComplianceStatus.Never,
        V1.ComplianceStatus.Unprotected => Contract.ComplianceStatus.Unprotected,
        _ => throw OrchestratorException.InvalidArgument(field, $"{(int)status} is not a compliance status (ok, out-of-rpo, never or unprotected)"),
    };

    private static V1.PolicyKind ToProto(Contract.PolicyKind kind) => kind switch
    {
        Contract.PolicyKind.LiveBackup => V1.PolicyKind.LiveBackup,
        Contract.PolicyKind.Checkpoint => V1.PolicyKind.Checkpoint,
        _ => V1.PolicyKind.Unspecified,
    };

    private static V1.PolicyConcurrency ToProto(Contract.PolicyConcurrency concurrency) =>
        new() { PerHost = concurrency.PerHost, Fleet = concurrency.Fleet };

    private static Timestamp? ToTimestamp(DateTimeOffset? value) =>
        value is { } at ? Timestamp.FromDateTimeOffset(at) : null;

    private static TimeSpan ToTimeSpan(Duration? duration, string field)
    {
        if (duration is null)
        {
            return TimeSpan.Zero;
        }

        try
        {
            return duration.ToTimeSpan();
        }
        catch (InvalidOperationException e)
        {
            throw OrchestratorException.InvalidArgument(field, e.Message);
        }
    }
}
