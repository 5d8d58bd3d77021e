using Orchestrator.Grains.Backups;
using Orchestrator.Grains.Policies;

namespace Orchestrator.UnitTests.Policies;

public sealed class PolicyValidatorTests
{
    private static readonly DateTimeOffset Now = new(2026, 11, 26, 12, 0, 0, TimeSpan.Zero);
    private static readonly BackupOptions Backup = new() { Roots = ["/backups"] };

    private static PolicySpec Valid() => new()
    {
        Name = "nightly-web",
        Kind = PolicyKind.LiveBackup,
        Selector = new PolicySelector { Hosts = ["kvm-*"], Vms = ["web-*"], Labels = new Dictionary<string, string> { ["tier"] = "web" } },
        Schedule = new PolicySchedule("0 2 * * *", "Europe/Berlin"),
        Retention = new RetentionPolicy(KeepLast: 7, Daily: 7),
        Target = "/backups/{host}/{vm}",
        Concurrency = new PolicyConcurrency(1, 4),
        Rpo = TimeSpan.FromHours(26),
    };

    private static string FieldOf(PolicySpec spec) =>
        Assert.Throws<OrchestratorException>(() => PolicyValidator.Validate(spec, Backup, Now)).Field!;

    [Fact]
    public void Validate_GoodSpec_KeepsItAndParsesTheSchedule()
    {
        var result = PolicyValidator.Validate(Valid(), Backup, Now);

        Assert.Equal("/backups/{host}/{vm}", result.Spec.Target);
        Assert.NotNull(result.Cron);
        Assert.Equal("Europe/Berlin", result.Zone.Id);
    }

    [Theory]
    [InlineData("Bad_Name", "name")]
    [InlineData("", "name")]
    [InlineData("a-name-that-is-much-longer-than-forty-characters", "name")]
    public void Validate_BadName_NamesTheField(string name, string field) =>
        Assert.Equal(field, FieldOf(Valid() with { Name = name }));

    [Theory]
    [InlineData("0 2 * *")]
    [InlineData("61 * * * *")]
    [InlineData("0 0 30 2 *")]
    public void Validate_BadCron_NamesScheduleCron(string cron) =>
        Assert.Equal("schedule.cron", FieldOf(Valid() with { Schedule = new PolicySchedule(cron) }));

    [Fact]
    public void Validate_UnknownTimeZone_NamesScheduleTimeZone() =>
        Assert.Equal("schedule.time_zone", FieldOf(Valid() with { Schedule = new PolicySchedule("0 2 * * *", "Mars/Olympus") }));

    [Theory]
    [InlineData(0, 4, "concurrency.per_host")]
    [InlineData(1, 0, "concurrency.fleet")]
    [InlineData(-3, 4, "concurrency.per_host")]
    public void Validate_ConcurrencyBelowOne_NamesTheLimit(int perHost, int fleet, string field) =>
        Assert.Equal(field, FieldOf(Valid() with { Concurrency = new PolicyConcurrency(perHost, fleet) }));

    [Theory]
    [InlineData("/backups/../etc/{vm}")]
    [InlineData("/etc/{host}")]
    [InlineData("backups/{vm}")]
    [InlineData("/backups/{vm}/{disk}")]
    [InlineData("/backups/{vm")]
    public void Validate_TargetEscapingRootsOrMalformed_NamesTarget(string target) =>
        Assert.Equal("target", FieldOf(Valid() with { Target = target }));

    [Fact]
    public void Validate_TargetUnderARootWithPolicyPlaceholder_Accepted() =>
        Assert.Equal("/backups/{policy}/{host}-{vm}", PolicyValidator.Validate(Valid() with { Target = "/backups/{policy}/{host}-{vm}" }, Backup, Now).Spec.Target);

    [Fact]
    public void Validate_NoRetention_NamesRetention() =>
        Assert.Equal("retention", FieldOf(Valid() with { Retention = new RetentionPolicy() }));

    [Fact]
    public void Validate_HourlyRetentionOnLiveBackup_NamesRetentionHourly() =>
        Assert.Equal("retention.hourly", FieldOf(Valid() with { Retention = new RetentionPolicy(KeepLast: 1, Hourly: 24) }));

    [Fact]
    public void Validate_CheckpointPolicyWithTarget_NamesTarget() =>
        Assert.Equal("target", FieldOf(Valid() with { Kind = PolicyKind.Checkpoint }));

    [Fact]
    public void Validate_NegativeRpo_NamesRpo() =>
        Assert.Equal("rpo", FieldOf(Valid() with { Rpo = TimeSpan.FromHours(-1) }));

    [Fact]
    public void Validate_NegativeBandwidth_NamesBandwidth() =>
        Assert.Equal("bandwidth", FieldOf(Valid() with { BandwidthBytesPerSecond = -1 }));

    [Theory]
    [InlineData(0, "kvm/01", "selector.hosts[0]")]
    [InlineData(1, "a/b", "selector.vms[1]")]
    public void Validate_BadSelectorPattern_NamesItsIndex(int kind, string pattern, string field)
    {
        var selector = kind == 0 ? new PolicySelector { Hosts = [pattern] } : new PolicySelector { Vms = ["web-*", pattern] };
        Assert.Equal(field, FieldOf(Valid() with { Selector = selector }));
    }

    [Fact]
    public void Validate_NoRootsConfigured_RefusesAnyTarget()
    {
        var e = Assert.Throws<OrchestratorException>(() => PolicyValidator.Validate(Valid(), new BackupOptions(), Now));
        Assert.Equal("target", e.Field);
        Assert.Contains("no backup roots", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("web-*", "web-1", true)]
    [InlineData("web-*", "db-1", false)]
    [InlineData("*", "", true)]
    [InlineData("w?b-1", "web-1", true)]
    [InlineData("*-1", "web-1", true)]
    [InlineData("*b*", "web-1", true)]
    [InlineData("web", "web-1", false)]
    [InlineData("Web-*", "web-1", false)]
    [InlineData("a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false)]
    public void Glob_Patterns_MatchAsDocumented(string pattern, string text, bool expected) =>
        Assert.Equal(expected, PolicySelectorMatcher.Glob(pattern, text));

    [Fact]
    public void Matches_LabelsAllRequired_StarMeansAnyValue()
    {
        var labels = new Dictionary<string, string> { ["tier"] = "web", ["env"] = "prod" };
        Assert.True(PolicySelectorMatcher.Matches(new PolicySelector { Labels = new Dictionary<string, string> { ["tier"] = "web", ["env"] = "*" } }, "kvm-01", "web-1", labels));
        Assert.False(PolicySelectorMatcher.Matches(new PolicySelector { Labels = new Dictionary<string, string> { ["tier"] = "db" } }, "kvm-01", "web-1", labels));
        Assert.False(PolicySelectorMatcher.Matches(new PolicySelector { Labels = new Dictionary<string, string> { ["owner"] = "*" } }, "kvm-01", "web-1", labels));
        Assert.False(PolicySelectorMatcher.Matches(new PolicySelector { Hosts = ["kvm-02"] }, "kvm-01", "web-1", labels));
    }
}

public sealed class PolicyLevelValidatorTests
{
    private static readonly DateTimeOffset Now = new(2026, 12, 7, 12, 0, 0, TimeSpan.Zero);
    private static readonly BackupOptions Backup = new() { Roots = ["/backups"] };

    private static PolicySpec Auto() => new()
    {
        Name = "nightly-inc",
        Kind = PolicyKind.LiveBackup,
        Target = "/backups/{host}",
        Concurrency = new PolicyConcurrency(1, 4),
        Level = BackupLevel.Auto,
    };

    [Fact]
    public void Validate_LevelAutoWithACountOrADuration_Kept()
    {
        Assert.Equal(7, PolicyValidator.Validate(Auto() with { FullEveryRuns = 7 }, Backup, Now).Spec.FullEveryRuns);
        Assert.Equal(TimeSpan.FromDays(7), PolicyValidator.Validate(Auto() with { FullEvery = TimeSpan.FromDays(7) }, Backup, Now).Spec.FullEvery);
    }

    [Theory]
    [InlineData(-1, 0, BackupLevel.Auto, PolicyKind.LiveBackup, "full_every")]
    [InlineData(1001, 0, BackupLevel.Auto, PolicyKind.LiveBackup, "full_every")]
    [InlineData(7, 7, BackupLevel.Auto, PolicyKind.LiveBackup, "full_every")]
    [InlineData(0, -1, BackupLevel.Auto, PolicyKind.LiveBackup, "full_every")]
    [InlineData(0, 400, BackupLevel.Auto, PolicyKind.LiveBackup, "full_every")]
    [InlineData(7, 0, BackupLevel.Full, PolicyKind.LiveBackup, "full_every")]
    [InlineData(0, 0, (BackupLevel)9, PolicyKind.LiveBackup, "level")]
    [InlineData(0, 0, BackupLevel.Auto, PolicyKind.Checkpoint, "level")]
    public void Validate_BadLevelOrFullEvery_NamesTheField(int runs, int days, BackupLevel level, PolicyKind kind, string field)
    {
        var spec = Auto() with
        {
            Kind = kind,
            Target = kind == PolicyKind.LiveBackup ? "/backups/{host}" : null,
            Level = level,
            FullEveryRuns = runs,
            FullEvery = days == 0 ? null : TimeSpan.FromDays(days),
        };

        Assert.Equal(field, Assert.Throws<OrchestratorException>(() => PolicyValidator.Validate(spec, Backup, Now)).Field);
    }
}
