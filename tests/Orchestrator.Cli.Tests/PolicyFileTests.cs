using Google.Protobuf.WellKnownTypes;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Policies;
using Orchestrator.Cli.Tests.Fakes;

namespace Orchestrator.Cli.Tests;

/// <summary>Policy files: YAML and JSON into the spec to send, and every client-side error with its line and field.</summary>
public sealed class PolicyFileTests
{
    private const string Source = "nightly.yaml";

    private static string Text(params string[] lines) => string.Join("\n", lines) + "\n";

    private static PolicyDocument Parse(params string[] lines) => PolicyFile.Parse(Text(lines), Source);

    /// <summary>The formatted errors of a file that must not parse.</summary>
    private static string[] Errors(params string[] lines)
    {
        var e = Assert.Throws<PolicyFileException>(() => PolicyFile.Parse(Text(lines), Source));
        return [.. e.Errors.Select(error => error.Format(e.FileName))];
    }

    private static readonly string[] Nightly =
    [
        "name: nightly-web",                          // 1
        "kind: live-backup",                          // 2
        "description: web tier",                      // 3
        "selector:",                                  // 4
        "  hosts: [\"kvm-*\"]",                       // 5
        "  vms:",                                     // 6
        "    - web-*",                                // 7
        "    - db-1",                                 // 8
        "  labels: {tier: web, backup: \"*\"}",       // 9
        "schedule:",                                  // 10
        "  cron: \"0 2 * * *\"",                      // 11
        "  time_zone: Europe/Berlin",                 // 12
        "retention: {keep_last: 7, daily: 7, weekly: 4, monthly: 6}", // 13
        "target: /backups/{host}",               // 14
        "quiesce: try",                               // 15
        "verify: true",                               // 16
        "bandwidth: 100MiB",                          // 17
        "concurrency: {per_host: 1, fleet: 4}",       // 18
        "rpo: 26h",                                   // 19
    ];

    [Fact]
    public void Parse_EveryField_BuildsTheSpecTheServerReturnsForIt()
    {
        PolicyDocument document = Parse(Nightly);

        Assert.Equal(PolicySamples.NightlySpec(), document.Spec);
        Assert.Equal(Source, document.Source);
    }

    [Fact]
    public void Parse_Json_SameSpecAsTheYaml()
    {
        const string Json = """
            {
              "name": "nightly-web", "kind": "live-backup", "description": "web tier",
              "selector": {"hosts": ["kvm-*"], "vms": ["web-*", "db-1"], "labels": {"tier": "web", "backup": "*"}},
              "schedule": {"cron": "0 2 * * *", "time_zone": "Europe/Berlin"},
              "retention": {"keep_last": 7, "daily": 7, "weekly": 4, "monthly": 6},
              "target": "/backups/{host}",
              "quiesce": "try",
              "verify": true,
              "bandwidth": 104857600,
              "concurrency": {"per_host": 1, "fleet": 4},
              "rpo": 93600
            }
            """;

        Assert.Equal(PolicySamples.NightlySpec(), PolicyFile.Parse(Json, "nightly.json").Spec);
    }

    [Fact]
    public void Parse_JsonIndentedWithTabs_Parses()
    {
        PolicyDocument document = PolicyFile.Parse("{\n\t\"name\": \"p\",\n\t\"concurrency\": {\n\t\t\"fleet\": 2\n\t}\n}\n", "p.json");

        Assert.Equal("p", document.Spec.Name);
        Assert.Equal(4, document.LineOf("concurrency.fleet"));
    }

    [Fact]
    public void Parse_LevelAutoWithFullEvery_ACountOrADuration()
    {
        PolicySpec runs = Parse("name: p", "kind: live-backup", "level: auto", "full_every: 7 runs").Spec;
        PolicySpec age = Parse("name: p", "kind: live-backup", "level: auto", "full_every: 7d").Spec;

        Assert.Equal(("auto", 7, null), (runs.Level, runs.FullEveryRuns, runs.FullEvery));
        Assert.Equal(("auto", 0, TimeSpan.FromDays(7)), (age.Level, age.FullEveryRuns, age.FullEvery.ToTimeSpan()));
    }

    [Fact]
    public void Parse_UnknownLevel_NamesTheLineAndTheChoices()
    {
        string error = Assert.Single(Errors("name: p", "level: sometimes"));

        Assert.Contains(":2:", error, StringComparison.Ordinal);
        Assert.Contains("level:", error, StringComparison.Ordinal);
        Assert.Contains("full or auto", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_OnlyNameAndKind_LeavesEveryOtherFieldUnsetForTheServersDefaults()
    {
        PolicySpec spec = Parse("name: p", "kind: checkpoint").Spec;

        Assert.Equal(new PolicySpec { Name = "p", Kind = PolicyKind.Checkpoint }, spec);
        Assert.Null(spec.Selector);
        Assert.Null(spec.Schedule);
        Assert.Null(spec.Retention);
        Assert.Null(spec.Concurrency);
        Assert.False(spec.HasVerify);
        Assert.Null(spec.Rpo);
    }

    [Fact]
    public void Parse_NullValues_AreAbsent()
    {
        PolicySpec spec = Parse("name: p", "kind: live-backup", "schedule: null", "target: ~", "description:", "verify:", "rpo: null").Spec;

        Assert.Null(spec.Schedule);
        Assert.Equal("", spec.Target);
        Assert.Equal("", spec.Description);
        Assert.False(spec.HasVerify);
        Assert.Null(spec.Rpo);
    }

    [Fact]
    public void Parse_ConcurrencyWithOneValue_SetsOnlyThatOne()
    {
        PolicyConcurrency concurrency = Parse("name: p", "concurrency: {fleet: 0}").Spec.Concurrency;

        // 0 is sent as written: the server names concurrency.fleet in its refusal.
        Assert.False(concurrency.HasPerHost);
        Assert.True(concurrency.HasFleet);
        Assert.Equal(0, concurrency.Fleet);
    }

    [Theory]
    [InlineData("0", 0L)]
    [InlineData("1048576", 1048576L)]
    [InlineData("512K", 512L << 10)]
    [InlineData("100MiB", 100L << 20)]
    [InlineData("100 MiB/s", 100L << 20)]
    [InlineData("2g", 2L << 30)]
    [InlineData("1TiB", 1L << 40)]
    [InlineData("500MB", 500_000_000L)]
    [InlineData("1kb", 1000L)]
    public void Parse_Bandwidth_WholeBytesOrWithAUnit(string text, long bytes)
    {
        Assert.Equal(bytes, Parse("name: p", $"bandwidth: {text}").Spec.BandwidthBytesPerSecond);
    }

    [Theory]
    [InlineData("90m", 5400)]
    [InlineData("26h", 93600)]
    [InlineData("7d", 604800)]
    [InlineData("1h30m", 5400)]
    [InlineData("0", 0)]
    [InlineData("3600", 3600)]
    public void Parse_Rpo_DurationOrSeconds(string text, long seconds)
    {
        Assert.Equal(TimeSpan.FromSeconds(seconds), Parse("name: p", $"rpo: {text}").Spec.Rpo.ToTimeSpan());
    }

    [Fact]
    public void Parse_UnknownNestedField_NamesLineFieldAndTheExpectedOnes()
    {
        string[] errors = Errors(
            "name: p",
            "kind: live-backup",
            "selector:",
            "  hosts: [kvm-01]",
            "  vmz: [web-1]");

        Assert.Equal(["nightly.yaml:5: selector.vmz: unknown field (expected hosts, vms, labels)"], errors);
    }

    [Fact]
    public void Parse_UnknownTopLevelField_ListsTheTopLevelFields()
    {
        string[] errors = Errors("name: p", "Kind: checkpoint");

        Assert.Equal(
            ["nightly.yaml:2: Kind: unknown field (expected name, kind, description, selector, schedule, retention, target, quiesce, verify, bandwidth, concurrency, rpo, test_restore, level, full_every)"],
            errors);
    }

    [Fact]
    public void Parse_IntegerFieldNotAnInteger_NamesFieldAndValue()
    {
        Assert.Equal(
            ["nightly.yaml:3: concurrency.per_host: 'abc' is not an integer"],
            Errors("name: p", "concurrency:", "  per_host: abc", "  fleet: 4"));
    }

    [Fact]
    public void Parse_RetentionCountNotWhole_NamesTheCount()
    {
        Assert.Equal(["nightly.yaml:2: retention.daily: '1.5' is not an integer"], Errors("name: p", "retention: {daily: 1.5}"));
    }

    [Fact]
    public void Parse_BadDuration_NamesRpo()
    {
        string error = Assert.Single(Errors("name: p", "rpo: 26 hours"));

        Assert.StartsWith("nightly.yaml:2: rpo: '26 hours' is not a duration (e.g. 90m, 26h, 7d, 1h30m", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("100 Mbit")]
    [InlineData("1.5G")]
    [InlineData("-1")]
    [InlineData("lots")]
    public void Parse_BadSize_NamesBandwidth(string text)
    {
        string error = Assert.Single(Errors("name: p", $"bandwidth: {text}"));

        Assert.StartsWith($"nightly.yaml:2: bandwidth: '{text}' is not a size in bytes per second", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_BadKind_ListsTheKinds()
    {
        Assert.Equal(
            ["nightly.yaml:2: kind: 'backup' is not a policy kind (expected live-backup or checkpoint)"],
            Errors("name: p", "kind: backup"));
    }

    [Fact]
    public void Parse_BadQuiesce_ListsTheModes()
    {
        Assert.Equal(
            ["nightly.yaml:2: quiesce: 'no' is not a quiesce mode (expected off, try or required)"],
            Errors("name: p", "quiesce: no"));
    }

    [Fact]
    public void Parse_BadBoolean_NamesVerify()
    {
        Assert.Equal(["nightly.yaml:2: verify: 'yes' is not a boolean (true or false)"], Errors("name: p", "verify: yes"));
    }

    [Fact]
    public void Parse_ScalarWhereAListBelongs_NamesTheField()
    {
        string error = Assert.Single(Errors("name: p", "selector:", "  hosts: kvm-*"));

        Assert.StartsWith("nightly.yaml:3: selector.hosts: expected a list of host name globs", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_MappingInAList_NamesTheItemByIndex()
    {
        Assert.Equal(
            ["nightly.yaml:5: selector.vms[1]: expected a string, not a mapping"],
            Errors("name: p", "selector:", "  vms:", "    - web-1", "    - {name: web-2}"));
    }

    [Fact]
    public void Parse_ScalarWhereAMappingBelongs_NamesTheFieldAndItsKeys()
    {
        Assert.Equal(
            ["nightly.yaml:2: schedule: expected a mapping of cron, time_zone, not '0 2 * * *'"],
            Errors("name: p", "schedule: 0 2 * * *"));
    }

    [Fact]
    public void Parse_LabelWithoutValue_NamesTheLabel()
    {
        string error = Assert.Single(Errors("name: p", "selector:", "  labels:", "    tier:"));

        Assert.StartsWith("nightly.yaml:4: selector.labels.tier: expected the label's value as a string", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_SeveralProblems_ReportsEveryOneInFileOrder()
    {
        string[] errors = Errors(
            "name: p",
            "kind: backup",
            "concurrency: {per_host: x}",
            "rpo: soon",
            "extra: 1");

        Assert.Equal(
            ["nightly.yaml:2: kind", "nightly.yaml:3: concurrency.per_host", "nightly.yaml:4: rpo", "nightly.yaml:5: extra"],
            errors.Select(e => string.Join(": ", e.Split(": ").Take(2))));
    }

    [Fact]
    public void Parse_MalformedYaml_GivesLineAndColumn()
    {
        string error = Assert.Single(Errors("name: p", "  kind: checkpoint"));

        Assert.StartsWith("nightly.yaml:2:7: malformed YAML: ", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_UnclosedFlowList_IsMalformedYamlWithAPosition()
    {
        string error = Assert.Single(Errors("name: p", "selector:", "  hosts: [kvm-01", "  vms: [web-1]"));

        Assert.Matches(@"^nightly\.yaml:\d+:\d+: malformed YAML: ", error);
    }

    [Fact]
    public void Parse_DuplicateKey_IsMalformedYamlAtTheSecondOne()
    {
        string error = Assert.Single(Errors("name: p", "kind: checkpoint", "name: q"));

        Assert.StartsWith("nightly.yaml:3:1: malformed YAML: Duplicate key", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_TwoDocuments_RefusedAtTheSecond()
    {
        Assert.Equal(["nightly.yaml:4: one policy per file: a second document starts here"], Errors("name: p", "kind: checkpoint", "---", "name: q"));
    }

    [Theory]
    [InlineData("")]
    [InlineData("# only a comment")]
    public void Parse_NoDocument_SaysTheFileHoldsNoPolicy(string text)
    {
        var e = Assert.Throws<PolicyFileException>(() => PolicyFile.Parse(text, "empty.yaml"));

        Assert.Equal("empty.yaml: the file holds no policy", Assert.Single(e.Errors).Format(e.FileName));
    }

    [Fact]
    public void Parse_RootIsAList_SaysAPolicyIsAMapping()
    {
        string error = Assert.Single(Errors("- name: p"));

        Assert.StartsWith("nightly.yaml:1: a policy is a mapping of fields (name, kind,", error, StringComparison.Ordinal);
    }

    [Fact]
    public void LineOf_ServerFieldPaths_FindTheirLines()
    {
        PolicyDocument document = Parse(Nightly);

        Assert.Equal(2, document.LineOf("kind"));
        Assert.Equal(11, document.LineOf("schedule.cron"));
        Assert.Equal(12, document.LineOf("schedule.time_zone"));
        Assert.Equal(5, document.LineOf("selector.hosts[0]"));
        Assert.Equal(8, document.LineOf("selector.vms[1]"));
        Assert.Equal(9, document.LineOf("selector.labels.tier"));
        Assert.Equal(13, document.LineOf("retention.keep_last"));
        Assert.Equal(18, document.LineOf("concurrency.per_host"));
        Assert.Equal(19, document.LineOf("rpo"));
    }

    [Fact]
    public void LineOf_FieldTheFileLeftOut_IsItsNearestEnclosingFieldsLine_OrNone()
    {
        PolicyDocument document = Parse("name: p", "kind: live-backup", "retention:", "  daily: 7");

        Assert.Equal(3, document.LineOf("retention.keep_last"));
        Assert.Null(document.LineOf("concurrency.fleet"));
        Assert.Null(document.LineOf("schedule"));
    }

    [Fact]
    public void Describe_ServerComplaint_IsFileLineFieldReason()
    {
        PolicyDocument document = Parse(Nightly);

        Assert.Equal("nightly.yaml:11: schedule.cron: 'x' is not a cron expression", document.Describe("schedule.cron", "'x' is not a cron expression"));
        Assert.Equal("nightly.yaml: name: a policy name is required", Parse("kind: checkpoint").Describe("name", "a policy name is required"));
    }

    [Fact]
    public void Examples_EveryPolicyFileInDeployExamples_Parses()
    {
        // Policy files are YAML or JSON; the directory also holds other examples (tokens.example).
        string directory = Path.Combine(AppContext.BaseDirectory, "examples");
        string[] files = Directory.GetFiles(directory)
            .Where(f => Path.GetExtension(f) is ".yaml" or ".yml" or ".json")
            .ToArray();

        Assert.True(files.Length >= 3, $"expected the example policies in {directory}");
        foreach (string file in files)
        {
            PolicyDocument document = PolicyFile.Parse(File.ReadAllText(file), Path.GetFileName(file));
            Assert.NotEqual(PolicyKind.Unspecified, document.Spec.Kind);
            Assert.NotEqual("", document.Spec.Name);
        }
    }

    [Fact]
    public void Examples_NightlyLiveBackup_IsTheSampleSpec()
    {
        string file = Path.Combine(AppContext.BaseDirectory, "examples", "nightly-live-backup.yaml");

        PolicySpec spec = PolicyFile.Parse(File.ReadAllText(file), "nightly-live-backup.yaml").Spec;

        PolicySpec expected = PolicySamples.NightlySpec();
        expected.Description = spec.Description;
        Assert.Equal(expected, spec);
        Assert.Equal(Duration.FromTimeSpan(TimeSpan.FromHours(26)), spec.Rpo);
    }
}
