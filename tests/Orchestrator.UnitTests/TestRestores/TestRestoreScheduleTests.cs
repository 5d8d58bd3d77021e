using Orchestrator.Grains.Backups;
using Orchestrator.Grains.Policies;

namespace Orchestrator.UnitTests.TestRestores;

/// <summary>When a policy's test_restore is due, the RTO flag, and what the server refuses in test_restore and probes.</summary>
public sealed class TestRestoreScheduleTests
{
    private static readonly DateTimeOffset Now = new(2026, 12, 7, 12, 0, 0, TimeSpan.Zero);
    private static readonly BackupOptions Backup = new() { Roots = ["/backups"] };

    private static TestRestoreSpec EveryRuns(int n) => new(n, null, TestProbe.Agent);

    private static TestRestoreSpec Every(TimeSpan every) => new(0, every, TestProbe.Agent);

    [Fact]
    public void IsDue_NeverTested_Due() =>
        Assert.True(TestRestoreSchedule.IsDue(EveryRuns(7), null, 0, Now));

    [Theory]
    [InlineData(2, false)]
    [InlineData(3, true)]
    [InlineData(4, true)]
    public void IsDue_EveryThreeRuns_DueFromTheThirdCompletedRunSinceTheLastTest(int completedSince, bool due) =>
        Assert.Equal(due, TestRestoreSchedule.IsDue(EveryRuns(3), Now.AddDays(-30), completedSince, Now));

    [Theory]
    [InlineData(23, false)]
    [InlineData(24, true)]
    public void IsDue_EveryDay_DueOnceADayHasPassedWhateverTheRuns(int hoursSince, bool due) =>
        Assert.Equal(due, TestRestoreSchedule.IsDue(Every(TimeSpan.FromDays(1)), Now.AddHours(-hoursSince), 100, Now));

    [Theory]
    [InlineData(null, 20.0, false)]
    [InlineData(60.0, null, true)]
    [InlineData(60.0, 59.9, false)]
    [InlineData(60.0, 60.1, true)]
    public void RtoMissed_BootAboveTheRtoOrNoProvenRestore_Flagged(double? rtoSeconds, double? boot, bool missed) =>
        Assert.Equal(missed, TestRestoreSchedule.RtoMissed(rtoSeconds is { } s ? TimeSpan.FromSeconds(s) : null, boot));

    private static PolicySpec Policy(TestRestoreSpec test, PolicyKind kind = PolicyKind.LiveBackup) => new()
    {
        Name = "nightly",
        Kind = kind,
        Selector = new PolicySelector(),
        Retention = new RetentionPolicy(KeepLast: 7),
        Concurrency = new PolicyConcurrency(1, 4),
        TestRestore = test,
    };

    private static string FieldOf(PolicySpec spec) =>
        Assert.Throws<OrchestratorException>(() => PolicyValidator.Validate(spec, Backup, Now)).Field!;

    [Fact]
    public void Validate_GoodTestRestore_Kept()
    {
        var test = new TestRestoreSpec(7, null, TestProbe.Parse("console:login:"), TimeSpan.FromMinutes(2), TimeSpan.FromMinutes(10));
        Assert.Equal(test, PolicyValidator.Validate(Policy(test), Backup, Now).Spec.TestRestore);
    }

    [Fact]
    public void Validate_BothEveryRunsAndEvery_NamesEvery() =>
        Assert.Equal("test_restore.every", FieldOf(Policy(new TestRestoreSpec(3, TimeSpan.FromDays(1), TestProbe.Agent))));

    [Fact]
    public void Validate_NeitherEveryRunsNorEvery_NamesEvery() =>
        Assert.Equal("test_restore.every", FieldOf(Policy(new TestRestoreSpec(0, null, TestProbe.Agent))));

    [Fact]
    public void Validate_TooManyRuns_NamesEvery() =>
        Assert.Equal("test_restore.every", FieldOf(Policy(EveryRuns(PolicyValidator.MaxTestEveryRuns + 1))));

    [Fact]
    public void Validate_CheckpointPolicy_NamesTestRestore() =>
        Assert.Equal("test_restore", FieldOf(Policy(EveryRuns(1), PolicyKind.Checkpoint)));

    [Fact]
    public void Validate_ZeroRto_NamesRto() =>
        Assert.Equal("test_restore.rto", FieldOf(Policy(new TestRestoreSpec(1, null, TestProbe.Agent, Rto: TimeSpan.Zero))));

    [Fact]
    public void Validate_TimeoutBelowFiveSeconds_NamesTimeout() =>
        Assert.Equal("test_restore.timeout", FieldOf(Policy(new TestRestoreSpec(1, null, TestProbe.Agent, Timeout: TimeSpan.FromSeconds(1)))));

    [Fact]
    public void Validate_ProbeWithABadRegex_NamesProbe() =>
        Assert.Equal("test_restore.probe", FieldOf(Policy(new TestRestoreSpec(1, null, new TestProbe(TestProbeKind.Console, "(unclosed")))));

    [Theory]
    [InlineData("", TestProbeKind.Agent, "")]
    [InlineData("agent", TestProbeKind.Agent, "")]
    [InlineData("console:login: $", TestProbeKind.Console, "login: $")]
    [InlineData("command:systemctl is-system-running", TestProbeKind.Command, "systemctl is-system-running")]
    public void Parse_TheThreeForms_KindAndArgument(string text, TestProbeKind kind, string argument)
    {
        var probe = TestProbe.Parse(text);
        Assert.Equal(kind, probe.Kind);
        Assert.Equal(argument, probe.Argument);
    }

    [Theory]
    [InlineData("ping")]
    [InlineData("console:")]
    [InlineData("command:")]
    [InlineData("console:[")]
    [InlineData("command:echo\u0001")]
    public void Parse_BadProbe_InvalidArgumentNamingProbe(string text)
    {
        var e = Assert.Throws<OrchestratorException>(() => TestProbe.Parse(text));
        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
        Assert.Equal("probe", e.Field);
    }

    [Fact]
    public void Parse_ArgumentOverTheLimit_Refused() =>
        Assert.Equal("probe", Assert.Throws<OrchestratorException>(() => TestProbe.Parse("command:" + new string('x', TestProbe.MaxArgumentLength + 1))).Field);
}
