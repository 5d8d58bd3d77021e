using Google.Protobuf.WellKnownTypes;
using Orchestrator.Silo.Services;
using V1 = Orchestrator.Api.V1;

namespace Orchestrator.UnitTests.Api;

/// <summary>Policies, runs and compliance between orchestrator.v1 messages and the grain contracts.</summary>
public sealed class PolicyMapperTests
{
    private static readonly DateTimeOffset Start = new(2026, 11, 26, 2, 0, 0, TimeSpan.Zero);

    private static V1.PolicySpec FullSpec() => new()
    {
        Name = "nightly-web",
        Kind = V1.PolicyKind.LiveBackup,
        Description = "web tier",
        Selector = new V1.PolicySelector { Hosts = { "kvm-*" }, Vms = { "web-*", "db-1" }, Labels = { ["tier"] = "web" } },
        Schedule = new V1.PolicySchedule { Cron = "0 2 * * *", TimeZone = "Europe/Berlin" },
        Retention = new V1.PolicyRetention { KeepLast = 7, Daily = 7, Weekly = 4, Monthly = 6 },
        Target = "/backups/{host}/{vm}",
        Quiesce = V1.QuiesceMode.Try,
        Verify = false,
        BandwidthBytesPerSecond = 100L << 20,
        Concurrency = new V1.PolicyConcurrency { PerHost = 2, Fleet = 8 },
        Rpo = Duration.FromTimeSpan(TimeSpan.FromHours(26)),
    };

    [Fact]
    public void ToContract_EveryFieldSet_CarriesEveryValue()
    {
        var spec = PolicyMapper.ToContract(FullSpec());

        Assert.Equal("nightly-web", spec.Name);
        Assert.Equal(PolicyKind.LiveBackup, spec.Kind);
        Assert.Equal("web tier", spec.Description);
        Assert.Equal(["kvm-*"], spec.Selector.Hosts);
        Assert.Equal(["web-*", "db-1"], spec.Selector.Vms);
        Assert.Equal("web", spec.Selector.Labels["tier"]);
        Assert.Equal(new PolicySchedule("0 2 * * *", "Europe/Berlin"), spec.Schedule);
        Assert.Equal(new RetentionPolicy(7, 0, 7, 4, 6), spec.Retention);
        Assert.Equal("/backups/{host}/{vm}", spec.Target);
        Assert.Equal(QuiesceMode.Try, spec.Quiesce);
        Assert.False(spec.Verify);
        Assert.Equal(100L << 20, spec.BandwidthBytesPerSecond);
        Assert.Equal(new PolicyConcurrency(2, 8), spec.Concurrency);
        Assert.Equal(TimeSpan.FromHours(26), spec.Rpo);
    }

    [Fact]
    public void ToContract_OnlyNameAndKind_TakesTheContractDefaults()
    {
        var spec = PolicyMapper.ToContract(new V1.PolicySpec { Name = "cp", Kind = V1.PolicyKind.Checkpoint });

        var defaults = new PolicySpec();
        Assert.Equal(PolicyKind.Checkpoint, spec.Kind);
        Assert.Empty(spec.Selector.Hosts);
        Assert.Empty(spec.Selector.Vms);
        Assert.Empty(spec.Selector.Labels);
        Assert.Null(spec.Schedule);
        Assert.Equal(defaults.Retention, spec.Retention);
        Assert.Null(spec.Target);
        Assert.Equal(QuiesceMode.Off, spec.Quiesce);
        Assert.True(spec.Verify);
        Assert.Equal(0, spec.BandwidthBytesPerSecond);
        Assert.Equal(new PolicyConcurrency(1, 4), spec.Concurrency);
        Assert.Equal(TimeSpan.Zero, spec.Rpo);
    }

    [Fact]
    public void ToContract_ConcurrencyWithOneValue_DefaultsTheOther_AndKeepsAnExplicitZero()
    {
        var spec = PolicyMapper.ToContract(new V1.PolicySpec
        {
            Name = "p",
            Kind = V1.PolicyKind.LiveBackup,
            Concurrency = new V1.PolicyConcurrency { PerHost = 0 },
        });

        // 0 is sent on to the validator, which names concurrency.per_host; only an unset value is defaulted.
        Assert.Equal(new PolicyConcurrency(0, 4), spec.Concurrency);
    }

    [Fact]
    public void ToContract_ScheduleWithoutTimeZone_IsUtc()
    {
        var spec = PolicyMapper.ToContract(new V1.PolicySpec
        {
            Name = "p",
            Kind = V1.PolicyKind.LiveBackup,
            Schedule = new V1.PolicySchedule { Cron = "@daily" },
        });

        Assert.Equal(new PolicySchedule("@daily", "UTC"), spec.Schedule);
    }

    [Theory]
    [InlineData(V1.PolicyKind.Unspecified, "a kind is required")]
    [InlineData((V1.PolicyKind)7, "7 is not a policy kind")]
    public void ToContract_NoOrUnknownKind_IsInvalidArgumentOnKind(V1.PolicyKind kind, string reason)
    {
        var e = Assert.Throws<OrchestratorException>(() => PolicyMapper.ToContract(new V1.PolicySpec { Name = "p", Kind = kind }));

        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
        Assert.Equal("kind", e.Field);
        Assert.Contains(reason, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ToContract_UnknownQuiesceMode_IsInvalidArgumentOnQuiesce()
    {
        var e = Assert.Throws<OrchestratorException>(() => PolicyMapper.ToContract(
            new V1.PolicySpec { Name = "p", Kind = V1.PolicyKind.LiveBackup, Quiesce = (V1.QuiesceMode)9 }));

        Assert.Equal("quiesce", e.Field);
    }

    [Fact]
    public void ToContract_MalformedRpo_IsInvalidArgumentOnRpo()
    {
        // Seconds and nanos of opposite signs: not a valid google.protobuf.Duration.
        var e = Assert.Throws<OrchestratorException>(() => PolicyMapper.ToContract(
            new V1.PolicySpec { Name = "p", Kind = V1.PolicyKind.LiveBackup, Rpo = new Duration { Seconds = 5, Nanos = -1 } }));

        Assert.Equal("rpo", e.Field);
    }

    [Fact]
    public void ToContract_NoSpec_IsInvalidArgumentOnSpec()
    {
        var e = Assert.Throws<OrchestratorException>(() => PolicyMapper.ToContract(null));

        Assert.Equal("spec", e.Field);
    }

    [Fact]
    public void ToProto_ThenToContract_GivesTheSameSpec()
    {
        var spec = PolicyMapper.ToContract(FullSpec());

        var again = PolicyMapper.ToContract(PolicyMapper.ToProto(spec));

        Assert.Equal(spec.Selector.Hosts, again.Selector.Hosts);
        Assert.Equal(spec.Selector.Vms, again.Selector.Vms);
        Assert.Equal(spec.Selector.Labels, again.Selector.Labels);
        Assert.Equal(spec with { Selector = again.Selector }, again);
    }

    [Fact]
    public void ToProto_SpecWithoutScheduleOrTarget_LeavesScheduleUnsetAndTargetEmpty_SetsEveryDefault()
    {
        var proto = PolicyMapper.ToProto(new PolicySpec { Name = "cp", Kind = PolicyKind.Checkpoint });

        Assert.Null(proto.Schedule);
        Assert.Equal("", proto.Target);
        Assert.True(proto.HasVerify);
        Assert.True(proto.Verify);
        Assert.True(proto.Concurrency.HasPerHost);
        Assert.Equal(1, proto.Concurrency.PerHost);
        Assert.Equal(4, proto.Concurrency.Fleet);
        Assert.Equal(7, proto.Retention.KeepLast);
        Assert.Equal(V1.QuiesceMode.Off, proto.Quiesce);
        Assert.Equal(V1.PolicyKind.Checkpoint, proto.Kind);
        Assert.Equal(TimeSpan.Zero, proto.Rpo.ToTimeSpan());
    }

    [Fact]
    public void ToProto_PolicyView_CarriesVersionTimesLastRunAndPendingRetries()
    {
        var run = Run(PolicyRunState.Running);
        var view = new PolicyView(PolicyMapper.ToContract(FullSpec()), 3, Start.AddDays(-2), Start.AddDays(-1), Start.AddDays(1), run, ["kvm-03/web-3"]);

        var proto = PolicyMapper.ToProto(view);

        Assert.Equal("nightly-web", proto.Spec.Name);
        Assert.Equal(3, proto.Version);
        Assert.Equal(Start.AddDays(-2), proto.CreatedAt.ToDateTimeOffset());
        Assert.Equal(Start.AddDays(-1), proto.UpdatedAt.ToDateTimeOffset());
        Assert.Equal(Start.AddDays(1), proto.NextRunAt.ToDateTimeOffset());
        Assert.Equal(run.RunId, proto.LastRun.RunId);
        Assert.Equal(["kvm-03/web-3"], proto.PendingRetries);
    }

    [Fact]
    public void ToProto_PolicyViewWithoutScheduleOrRuns_LeavesNextRunAndLastRunUnset()
    {
        var view = new PolicyView(new PolicySpec { Name = "p" }, 1, Start, Start, null, null, []);

        var proto = PolicyMapper.ToProto(view);

        Assert.Null(proto.NextRunAt);
        Assert.Null(proto.LastRun);
    }

    [Fact]
    public void ToProto_Run_CarriesEveryFieldAndEachTarget()
    {
        var run = Run(PolicyRunState.Partial) with
        {
            Trigger = PolicyRunTrigger.Retry,
            RetryOf = "p-20261125-020000-aaaaaa",
            EndedAt = Start.AddMinutes(5),
            TraceId = "4bf92f3577b34da6a3ce929d0e0e4736",
            Error = null,
        };

        var proto = PolicyMapper.ToProto(run);

        Assert.Equal("p-20261126-020000-abc123", proto.RunId);
        Assert.Equal("nightly-web", proto.Policy);
        Assert.Equal(3, proto.PolicyVersion);
        Assert.Equal(V1.PolicyKind.LiveBackup, proto.Kind);
        Assert.Equal(V1.PolicyRunTrigger.Retry, proto.Trigger);
        Assert.Equal("p-20261125-020000-aaaaaa", proto.RetryOf);
        Assert.Equal(V1.PolicyRunState.Partial, proto.State);
        Assert.Equal(Start, proto.StartedAt.ToDateTimeOffset());
        Assert.Equal(Start.AddMinutes(5), proto.EndedAt.ToDateTimeOffset());
        Assert.Equal(2, proto.Concurrency.PerHost);
        Assert.Equal(8, proto.Concurrency.Fleet);
        Assert.Equal("4bf92f3577b34da6a3ce929d0e0e4736", proto.TraceId);
        Assert.Equal(11, proto.Version);
        Assert.Equal("", proto.Error);
        Assert.Equal(
            [V1.PolicyTargetStatus.Succeeded, V1.PolicyTargetStatus.Skipped, V1.PolicyTargetStatus.Pending],
            proto.Targets.Select(t => t.Status));
        var done = proto.Targets[0];
        Assert.Equal(("kvm-01", "web-1"), (done.Host, done.Vm));
        Assert.Equal("kvm-01/web-1/b-20261126-020001-0a0b0c", done.BackupRun);
        Assert.Equal("", done.Checkpoint);
        Assert.Equal(Start.AddSeconds(1), done.AdmittedAt.ToDateTimeOffset());
        Assert.Equal(Start.AddSeconds(90), done.ReleasedAt.ToDateTimeOffset());
        Assert.Equal(1, done.Attempts);
        var skipped = proto.Targets[1];
        Assert.Equal("host kvm-03 unavailable", skipped.Reason);
        Assert.Null(skipped.AdmittedAt);
        Assert.Null(skipped.ReleasedAt);
    }

    [Theory]
    [InlineData(PolicyRunState.Running, V1.PolicyRunState.Running)]
    [InlineData(PolicyRunState.Completed, V1.PolicyRunState.Completed)]
    [InlineData(PolicyRunState.Failed, V1.PolicyRunState.Failed)]
    public void ToProto_RunState_MapsEachState(PolicyRunState state, V1.PolicyRunState expected)
    {
        Assert.Equal(expected, PolicyMapper.ToProto(Run(state)).State);
    }

    [Fact]
    public void ToProto_Compliance_CarriesThePoliciesWithTheirRpo()
    {
        var vm = new VmCompliance(
            "kvm-01",
            "web-1",
            true,
            [new PolicyCompliance("nightly-web", PolicyKind.LiveBackup, 3, Start, TimeSpan.FromHours(26), ComplianceStatus.OutOfRpo),
             new PolicyCompliance("hourly-cp", PolicyKind.Checkpoint, 1, null, TimeSpan.Zero, ComplianceStatus.Never)],
            ComplianceStatus.Never,
            Start,
            null);

        var proto = PolicyMapper.ToProto(vm);

        Assert.Equal(("kvm-01", "web-1", true), (proto.Host, proto.Vm, proto.Present));
        Assert.Equal(V1.ComplianceStatus.Never, proto.Status);
        Assert.Equal(Start, proto.LastBackupAt.ToDateTimeOffset());
        Assert.Null(proto.LastCheckpointAt);
        Assert.Equal(["nightly-web", "hourly-cp"], proto.Policies.Select(p => p.Policy));
        Assert.Equal(V1.PolicyKind.LiveBackup, proto.Policies[0].Kind);
        Assert.Equal(3, proto.Policies[0].Version);
        Assert.Equal(Start, proto.Policies[0].LastGoodAt.ToDateTimeOffset());
        Assert.Equal(TimeSpan.FromHours(26), proto.Policies[0].Rpo.ToTimeSpan());
        Assert.Equal(V1.ComplianceStatus.OutOfRpo, proto.Policies[0].Status);
        Assert.Null(proto.Policies[1].LastGoodAt);
        Assert.Equal(V1.ComplianceStatus.Never, proto.Policies[1].Status);
    }

    [Theory]
    [InlineData(V1.ComplianceStatus.Unspecified, null)]
    [InlineData(V1.ComplianceStatus.Ok, ComplianceStatus.Ok)]
    [InlineData(V1.ComplianceStatus.OutOfRpo, ComplianceStatus.OutOfRpo)]
    [InlineData(V1.ComplianceStatus.Never, ComplianceStatus.Never)]
    [InlineData(V1.ComplianceStatus.Unprotected, ComplianceStatus.Unprotected)]
    public void ToContract_ComplianceStatusFilter_UnspecifiedIsNone(V1.ComplianceStatus status, ComplianceStatus? expected)
    {
        Assert.Equal(expected, PolicyMapper.ToContract(status, "status"));
    }

    [Fact]
    public void ToContract_UnknownComplianceStatus_IsInvalidArgumentOnTheField()
    {
        var e = Assert.Throws<OrchestratorException>(() => PolicyMapper.ToContract((V1.ComplianceStatus)42, "status"));

        Assert.Equal("status", e.Field);
    }

    private static PolicyRunView Run(PolicyRunState state) => new(
        "p-20261126-020000-abc123",
        "nightly-web",
        3,
        PolicyKind.LiveBackup,
        PolicyRunTrigger.Manual,
        null,
        state,
        Start,
        null,
        [
            new PolicyTargetView("kvm-01", "web-1", PolicyTargetStatus.Succeeded, "kvm-01/web-1/b-20261126-020001-0a0b0c", null, null, Start.AddSeconds(1), Start.AddSeconds(90), 1),
            new PolicyTargetView("kvm-03", "web-3", PolicyTargetStatus.Skipped, null, null, "host kvm-03 unavailable", null, null, 0),
            new PolicyTargetView("kvm-02", "web-2", PolicyTargetStatus.Pending, null, null, "fleet budget full (8)", null, null, 0),
        ],
        new PolicyConcurrency(2, 8),
        null,
        11,
        "boom");
}
