using System.Text.Json;
using Google.Rpc;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Policies;
using Orchestrator.Cli.Tests.Fakes;

namespace Orchestrator.Cli.Tests;

/// <summary>The policy commands against a fake call invoker: what is sent, what is printed, the exit code.</summary>
public sealed class PolicyCommandTests : IDisposable
{
    private static readonly string NL = Environment.NewLine;

    private readonly string _directory = Path.Combine(Path.GetTempPath(), $"orchestrator-cli-{Guid.NewGuid():N}");

    public PolicyCommandTests() => Directory.CreateDirectory(_directory);

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private static string[] Lines(string text) => text.Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);

    private string WriteFile(string name, string text)
    {
        string path = Path.Combine(_directory, name);
        File.WriteAllText(path, text);
        return path;
    }

    /// <summary>deploy/examples/nightly-live-backup.yaml as the test knows it (PolicySamples.NightlySpec).</summary>
    private string NightlyFile() => WriteFile("nightly.yaml", string.Join("\n",
        "name: nightly-web",                          // 1
        "kind: live-backup",                          // 2
        "description: web tier",                      // 3
        "selector:",                                  // 4
        "  hosts: [\"kvm-*\"]",                       // 5
        "  vms: [web-*, db-1]",                       // 6
        "  labels: {tier: web, backup: \"*\"}",       // 7
        "schedule:",                                  // 8
        "  cron: \"0 2 * * *\"",                      // 9
        "  time_zone: Europe/Berlin",                 // 10
        "retention: {keep_last: 7, daily: 7, weekly: 4, monthly: 6}", // 11
        "target: /backups/{host}",               // 12
        "quiesce: try",                               // 13
        "verify: true",                               // 14
        "bandwidth: 100MiB",                          // 15
        "concurrency:",                               // 16
        "  per_host: 1",                              // 17
        "  fleet: 4",                                 // 18
        "rpo: 26h") + "\n");                          // 19

    private static FakeCallInvoker Applying(ApplyPolicyResponse response) =>
        new FakeCallInvoker().On<ApplyPolicyRequest, ApplyPolicyResponse>("ApplyPolicy", _ => response);

    private static FakeCallInvoker Watching(params PolicyRun[] runs) =>
        new FakeCallInvoker()
            .On<RunPolicyRequest, RunPolicyResponse>("RunPolicy", _ => new RunPolicyResponse { Run = PolicySamples.RunningRun() })
            .OnStream<WatchPolicyRunRequest, WatchPolicyRunResponse>(
                "WatchPolicyRun", [.. runs.Select(run => new WatchPolicyRunResponse { Run = run })]);

    [Fact]
    public async Task Apply_YamlFile_SendsTheParsedSpec_PrintsCreatedWithVersionAndNextRun()
    {
        FakeCallInvoker invoker = Applying(new ApplyPolicyResponse { Policy = PolicySamples.Nightly(version: 1), Created = true, Changed = true });

        CliRun run = await CliRun.RunAsync(invoker, "policy", "apply", "-f", NightlyFile());

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var request = Assert.IsType<ApplyPolicyRequest>(Assert.Single(invoker.Calls).Request);
        Assert.Equal(PolicySamples.NightlySpec(), request.Spec);
        Assert.Equal($"Created policy nightly-web (version 1).{NL}Next run at 2026-11-27T02:00:00Z.{NL}", run.Stdout);
        Assert.Empty(run.Stderr);
    }

    [Fact]
    public async Task Apply_SameSpecAgain_PrintsUnchanged()
    {
        FakeCallInvoker invoker = Applying(new ApplyPolicyResponse { Policy = PolicySamples.Checkpoints() });

        CliRun run = await CliRun.RunAsync(invoker, "policy", "apply", "--file", WriteFile("cp.yaml", "name: dev-checkpoints\nkind: checkpoint\n"));

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal($"Policy dev-checkpoints unchanged (version 1).{NL}", run.Stdout);
    }

    [Fact]
    public async Task ApplyJson_Updated_PrintsResultVersionAndThePolicy()
    {
        FakeCallInvoker invoker = Applying(new ApplyPolicyResponse { Policy = PolicySamples.Nightly(version: 4), Changed = true });

        CliRun run = await CliRun.RunAsync(invoker, "policy", "apply", "-f", NightlyFile(), "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal(["name", "result", "version", "policy"], json.RootElement.EnumerateObject().Select(p => p.Name));
        Assert.Equal("nightly-web", json.RootElement.GetProperty("name").GetString());
        Assert.Equal("updated", json.RootElement.GetProperty("result").GetString());
        Assert.Equal(4, json.RootElement.GetProperty("version").GetInt32());
        Assert.Equal("live-backup", json.RootElement.GetProperty("policy").GetProperty("spec").GetProperty("kind").GetString());
    }

    [Fact]
    public async Task Apply_DashReadsJsonFromStdin()
    {
        FakeCallInvoker invoker = Applying(new ApplyPolicyResponse { Policy = PolicySamples.Checkpoints(), Created = true, Changed = true });

        CliRun run = await CliRun.RunWithAsync(
            invoker,
            environment => environment with { Stdin = () => new StringReader("{\"name\": \"dev-checkpoints\", \"kind\": \"checkpoint\", \"rpo\": \"90m\"}") },
            "policy", "apply", "-f", "-");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var request = Assert.IsType<ApplyPolicyRequest>(Assert.Single(invoker.Calls).Request);
        Assert.Equal("dev-checkpoints", request.Spec.Name);
        Assert.Equal(PolicyKind.Checkpoint, request.Spec.Kind);
        Assert.Equal(TimeSpan.FromMinutes(90), request.Spec.Rpo.ToTimeSpan());
    }

    [Fact]
    public async Task Apply_StdinWithAnUnknownField_NamesStdinAndTheLine_SendsNothing()
    {
        var invoker = new FakeCallInvoker();

        CliRun run = await CliRun.RunWithAsync(
            invoker,
            environment => environment with { Stdin = () => new StringReader("name: p\nkind: checkpoint\nselector:\n  vmz: [a]\n") },
            "policy", "apply", "-f", "-");

        Assert.Equal(ExitCodes.InvalidArgument, run.ExitCode);
        Assert.Equal($"error: <stdin>:4: selector.vmz: unknown field (expected hosts, vms, labels){NL}", run.Stderr);
        Assert.Empty(invoker.Calls);
    }

    [Fact]
    public async Task Apply_ServerRejectsAField_PrintsFileLineFieldAndReason_ExitsInvalid()
    {
        string file = NightlyFile();
        var invoker = new FakeCallInvoker().Fail(
            "ApplyPolicy",
            Samples.RichError(
                Code.InvalidArgument,
                "schedule.cron: '0 2 * * *' never fires",
                Samples.BadField("schedule.cron", "schedule.cron: '0 2 * * *' never fires")));

        CliRun run = await CliRun.RunAsync(invoker, "policy", "apply", "-f", file);

        Assert.Equal(ExitCodes.InvalidArgument, run.ExitCode);
        Assert.Empty(run.Stdout);
        Assert.Equal($"error: {file}:9: schedule.cron: '0 2 * * *' never fires{NL}", run.Stderr);
    }

    [Theory]
    [InlineData("concurrency.per_host", 17)]
    [InlineData("concurrency.fleet", 18)]
    [InlineData("target", 12)]
    [InlineData("kind", 2)]
    [InlineData("selector.vms[1]", 6)]
    [InlineData("selector.labels.tier", 7)]
    [InlineData("retention.hourly", 11)]
    public async Task Apply_ServerRejectsAField_PointsAtThatFieldsLine(string field, int line)
    {
        string file = NightlyFile();
        var invoker = new FakeCallInvoker().Fail(
            "ApplyPolicy", Samples.RichError(Code.InvalidArgument, $"{field}: bad", Samples.BadField(field, $"{field}: bad")));

        CliRun run = await CliRun.RunAsync(invoker, "policy", "apply", "-f", file);

        Assert.Equal(ExitCodes.InvalidArgument, run.ExitCode);
        Assert.Equal($"error: {file}:{line}: {field}: bad{NL}", run.Stderr);
    }

    [Fact]
    public async Task Apply_ServerRejectsAFieldTheFileLeftOut_NamesFileAndFieldWithoutALine()
    {
        string file = WriteFile("p.yaml", "kind: checkpoint\n");
        var invoker = new FakeCallInvoker().Fail(
            "ApplyPolicy", Samples.RichError(Code.InvalidArgument, "name: a policy name is required", Samples.BadField("name", "name: a policy name is required")));

        CliRun run = await CliRun.RunAsync(invoker, "policy", "apply", "-f", file);

        Assert.Equal(ExitCodes.InvalidArgument, run.ExitCode);
        Assert.Equal($"error: {file}: name: a policy name is required{NL}", run.Stderr);
    }

    [Fact]
    public async Task Apply_ServerRejectsWithoutAField_FallsBackToTheGenericReport()
    {
        var invoker = new FakeCallInvoker().Fail("ApplyPolicy", Samples.RichError(Code.InvalidArgument, "the spec is invalid"));

        CliRun run = await CliRun.RunAsync(invoker, "policy", "apply", "-f", NightlyFile());

        Assert.Equal(ExitCodes.InvalidArgument, run.ExitCode);
        Assert.Equal($"error: the spec is invalid{NL}", run.Stderr);
    }

    [Fact]
    public async Task Apply_ServerConflict_ExitsFailedPrecondition()
    {
        var invoker = new FakeCallInvoker().Fail("ApplyPolicy", Samples.RichError(Code.Aborted, "policy nightly-web is running p-1"));

        CliRun run = await CliRun.RunAsync(invoker, "policy", "apply", "-f", NightlyFile());

        Assert.Equal(ExitCodes.FailedPrecondition, run.ExitCode);
    }

    [Fact]
    public async Task Apply_MalformedYaml_ExitsInvalidWithLineAndColumn_SendsNothing()
    {
        string file = WriteFile("bad.yaml", "name: p\n  kind: checkpoint\n");
        var invoker = new FakeCallInvoker();

        CliRun run = await CliRun.RunAsync(invoker, "policy", "apply", "-f", file);

        Assert.Equal(ExitCodes.InvalidArgument, run.ExitCode);
        Assert.StartsWith($"error: {file}:2:7: malformed YAML: ", run.Stderr, StringComparison.Ordinal);
        Assert.Empty(invoker.Calls);
    }

    [Fact]
    public async Task Apply_SeveralProblems_FirstOnTheErrorLineTheOthersIndented()
    {
        string file = WriteFile("bad.yaml", "name: p\nkind: backup\nconcurrency: {per_host: abc}\n");

        CliRun run = await CliRun.RunAsync(new FakeCallInvoker(), "policy", "apply", "-f", file);

        Assert.Equal(ExitCodes.InvalidArgument, run.ExitCode);
        Assert.Equal(
            [
                $"error: {file}:2: kind: 'backup' is not a policy kind (expected live-backup or checkpoint)",
                $"  {file}:3: concurrency.per_host: 'abc' is not an integer",
            ],
            Lines(run.Stderr));
    }

    [Fact]
    public async Task Apply_FileMissing_IsAUsageError()
    {
        string file = Path.Combine(_directory, "missing.yaml");

        CliRun run = await CliRun.RunAsync(new FakeCallInvoker(), "policy", "apply", "-f", file);

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.StartsWith($"error: --file: cannot read '{file}': ", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Apply_WithoutFile_IsAUsageError()
    {
        CliRun run = await CliRun.RunAsync(new FakeCallInvoker(), "policy", "apply");

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.Contains("--file", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ListTable_SortedByName_WithScheduleNextAndLastRunAndRpo()
    {
        var invoker = new FakeCallInvoker().On<ListPoliciesRequest, ListPoliciesResponse>(
            "ListPolicies", _ => new ListPoliciesResponse { Policies = { PolicySamples.Nightly(), PolicySamples.Checkpoints() } });

        CliRun run = await CliRun.RunAsync(invoker, "policy", "list");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal(
            [
                "NAME             KIND         VERSION  SCHEDULE                   NEXT RUN              LAST RUN                                                      RPO",
                "dev-checkpoints  checkpoint         1  on demand                  -                     -                                                               -",
                "nightly-web      live-backup        3  0 2 * * * (Europe/Berlin)  2026-11-27T02:00:00Z  p-20261126-020000-abc123 partial (3: 2 succeeded, 1 skipped)  26h",
            ],
            Lines(run.Stdout));
    }

    [Fact]
    public async Task ListTable_None_SaysSo()
    {
        var invoker = new FakeCallInvoker().On<ListPoliciesRequest, ListPoliciesResponse>("ListPolicies", _ => new ListPoliciesResponse());

        CliRun run = await CliRun.RunAsync(invoker, "policy", "list");

        Assert.Equal($"No policies.{NL}", run.Stdout);
    }

    [Fact]
    public async Task ListJson_ArrayOfPoliciesSortedByName()
    {
        var invoker = new FakeCallInvoker().On<ListPoliciesRequest, ListPoliciesResponse>(
            "ListPolicies", _ => new ListPoliciesResponse { Policies = { PolicySamples.Nightly(), PolicySamples.Checkpoints() } });

        CliRun run = await CliRun.RunAsync(invoker, "policy", "list", "--format", "json");

        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal(["dev-checkpoints", "nightly-web"], json.RootElement.EnumerateArray().Select(p => p.GetProperty("name").GetString()));
    }

    [Fact]
    public async Task ShowTable_EveryPropertyOfThePolicy()
    {
        var invoker = new FakeCallInvoker().On<GetPolicyRequest, GetPolicyResponse>(
            "GetPolicy", request => new GetPolicyResponse { Policy = PolicySamples.Nightly() });

        CliRun run = await CliRun.RunAsync(invoker, "policy", "show", "nightly-web");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal("nightly-web", Assert.IsType<GetPolicyRequest>(Assert.Single(invoker.Calls).Request).Name);
        Assert.Equal(
            [
                "Name:             nightly-web",
                "Kind:             live-backup",
                "Version:          3",
                "Description:      web tier",
                "Hosts:            kvm-*",
                "VMs:              web-*, db-1",
                "Labels:           backup=*,tier=web",
                "Schedule:         0 2 * * * (Europe/Berlin)",
                "Next run:         2026-11-27T02:00:00Z",
                "Retention:        last 7, daily 7, weekly 4, monthly 6",
                "Target:           /backups/{host}",
                "Quiesce:          try",
                "Verify:           yes",
                "Bandwidth:        100 MiB/s",
                "Budgets:          1 per host, 4 fleet-wide",
                "RPO:              26h",
                "Created:          2026-11-16T02:00:00Z",
                "Updated:          2026-11-25T02:00:00Z",
                "Last run:         p-20261126-020000-abc123 partial (3: 2 succeeded, 1 skipped)",
                "Pending retries:  kvm-03/web-3",
            ],
            Lines(run.Stdout));
    }

    [Fact]
    public async Task ShowJson_SpecIsAPolicyFileThatApplyTakesBack()
    {
        var invoker = new FakeCallInvoker().On<GetPolicyRequest, GetPolicyResponse>(
            "GetPolicy", _ => new GetPolicyResponse { Policy = PolicySamples.Nightly() });

        CliRun run = await CliRun.RunAsync(invoker, "policy", "show", "nightly-web", "--format", "json");

        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        string spec = json.RootElement.GetProperty("spec").GetRawText();
        Assert.Equal(PolicySamples.NightlySpec(), PolicyFile.Parse(spec, "spec.json").Spec);
    }

    [Fact]
    public async Task Show_UnknownPolicy_ExitsNotFound()
    {
        var invoker = new FakeCallInvoker().Fail("GetPolicy", Samples.RichError(Code.NotFound, "policy 'nope' not found"));

        CliRun run = await CliRun.RunAsync(invoker, "policy", "show", "nope");

        Assert.Equal(ExitCodes.NotFound, run.ExitCode);
        Assert.Equal($"error: policy 'nope' not found{NL}", run.Stderr);
    }

    [Theory]
    [InlineData("show", "Nightly")]
    [InlineData("delete", "-nightly")]
    [InlineData("run", "nightly_web")]
    [InlineData("runs", "a-name-that-is-longer-than-forty-characters-x")]
    public async Task NameArgument_NotAPolicyName_IsAUsageError_NothingSent(string verb, string name)
    {
        var invoker = new FakeCallInvoker();

        CliRun run = await CliRun.RunAsync(invoker, "policy", verb, name);

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.StartsWith($"error: argument NAME: '{name}' is not a policy name", run.Stderr, StringComparison.Ordinal);
        Assert.Empty(invoker.Calls);
    }

    [Theory]
    [InlineData(true, "Deleted policy nightly-web; its backups and checkpoints stay.")]
    [InlineData(false, "There is no policy nightly-web; nothing deleted.")]
    public async Task Delete_SaysWhetherThereWasOne(bool deleted, string text)
    {
        var invoker = new FakeCallInvoker().On<DeletePolicyRequest, DeletePolicyResponse>(
            "DeletePolicy", _ => new DeletePolicyResponse { Deleted = deleted });

        CliRun run = await CliRun.RunAsync(invoker, "policy", "delete", "nightly-web");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal(text + NL, run.Stdout);
    }

    [Fact]
    public async Task DeleteJson_NameAndDeleted()
    {
        var invoker = new FakeCallInvoker().On<DeletePolicyRequest, DeletePolicyResponse>(
            "DeletePolicy", _ => new DeletePolicyResponse { Deleted = true });

        CliRun run = await CliRun.RunAsync(invoker, "policy", "delete", "nightly-web", "--format", "json");

        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal("{\"name\":\"nightly-web\",\"deleted\":true}", JsonSerializer.Serialize(json.RootElement));
    }

    [Fact]
    public async Task Run_WithoutWatch_PrintsTheAdmittedRunWithItsTargets()
    {
        var invoker = new FakeCallInvoker().On<RunPolicyRequest, RunPolicyResponse>(
            "RunPolicy", _ => new RunPolicyResponse { Run = PolicySamples.RunningRun() });
        var clock = new FixedClock(PolicySamples.Start.AddSeconds(30));

        CliRun run = await CliRun.RunWithAsync(invoker, environment => environment with { Clock = clock }, "policy", "run", "nightly-web");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal("nightly-web", Assert.IsType<RunPolicyRequest>(Assert.Single(invoker.Calls).Request).Name);
        Assert.Equal(
            [
                "Run:       p-20261126-020000-abc123",
                "Policy:    nightly-web (version 3)",
                "Kind:      live-backup",
                "Trigger:   manual",
                "State:     running",
                "Error:     -",
                "Started:   2026-11-26T02:00:00Z",
                "Ended:     -",
                "Duration:  -",
                "Budgets:   1 per host, 4 fleet-wide",
                "Targets:   3: 1 running, 2 pending",
                "Trace ID:  4bf92f3577b34da6a3ce929d0e0e4736",
                "VM            STATUS   ATTEMPTS  TIME  RESULT                                 REASON",
                "kvm-01/web-1  running         1     -  kvm-01/web-1/b-20261126-020001-0a0b0c  -",
                "kvm-01/web-2  pending         0     -  -                                      host budget full (1)",
                "kvm-03/web-3  pending         0     -  -                                      -",
            ],
            Lines(run.Stdout));
    }

    [Fact]
    public async Task RunWithoutWatch_RunAlreadyPartial_StillExitsOk()
    {
        var invoker = new FakeCallInvoker().On<RunPolicyRequest, RunPolicyResponse>(
            "RunPolicy", _ => new RunPolicyResponse { Run = PolicySamples.PartialRun() });

        CliRun run = await CliRun.RunAsync(invoker, "policy", "run", "nightly-web", "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal("partial", json.RootElement.GetProperty("state").GetString());
    }

    [Fact]
    public async Task Run_AlreadyRunning_ExitsFailedPrecondition()
    {
        var invoker = new FakeCallInvoker().Fail(
            "RunPolicy", Samples.RichError(Code.Aborted, "policy nightly-web is running p-20261126-020000-abc123"));

        CliRun run = await CliRun.RunAsync(invoker, "policy", "run", "nightly-web", "--watch");

        Assert.Equal(ExitCodes.FailedPrecondition, run.ExitCode);
        Assert.Single(invoker.Calls);
    }

    [Fact]
    public async Task RunWatchJson_Completed_PrintsOnlyTheEndedRun_ProgressOnStderr_ExitsOk()
    {
        FakeCallInvoker invoker = Watching(PolicySamples.RunningRun(), PolicySamples.CompletedRun());
        var clock = new FixedClock(PolicySamples.Start.AddSeconds(30));

        CliRun run = await CliRun.RunWithAsync(
            invoker, environment => environment with { Clock = clock }, "policy", "run", "nightly-web", "--watch", "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal(["RunPolicy", "WatchPolicyRun"], invoker.Calls.Select(c => c.Method));
        var watch = Assert.IsType<WatchPolicyRunRequest>(invoker.Calls[1].Request);
        Assert.Equal(("nightly-web", PolicySamples.RunId), (watch.Name, watch.RunId));
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal("completed", json.RootElement.GetProperty("state").GetString());
        Assert.Equal(
            [
                $"policy nightly-web: run {PolicySamples.RunId} admitted; waiting for it to end",
                "0:01:35  kvm-01/web-1  succeeded  kvm-01/web-1/b-20261126-020001-0a0b0c",
                "0:01:35  kvm-01/web-2  succeeded  kvm-01/web-2/b-20261126-020042-0d0e0f",
                "0:01:35  kvm-03/web-3  succeeded  kvm-03/web-3/b-20261126-020043-101112",
                "0:01:35  run completed: 3: 3 succeeded",
            ],
            Lines(run.Stderr));
    }

    [Fact]
    public async Task RunWatchJson_Partial_PrintsTheRun_ExitsRunFailedNamingTheCounts()
    {
        FakeCallInvoker invoker = Watching(PolicySamples.RunningRun(), PolicySamples.PartialRun());

        CliRun run = await CliRun.RunAsync(invoker, "policy", "run", "nightly-web", "--watch", "--format", "json");

        Assert.Equal(ExitCodes.RunFailed, run.ExitCode);
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal("partial", json.RootElement.GetProperty("state").GetString());
        Assert.Contains("0:01:35  kvm-03/web-3  skipped  host unavailable: no live silo serves host 'kvm-03'", Lines(run.Stderr));
        Assert.EndsWith(
            $"error: policy nightly-web: run {PolicySamples.RunId} ended partial: targets 3: 2 succeeded, 1 skipped{NL}",
            run.Stderr,
            StringComparison.Ordinal);
    }

    [Fact]
    public async Task RunWatchJson_ServerSendsChangesOnly_AsksForThem_RebuildsEveryTargetFromTheChanges()
    {
        // The whole run once, then only what changed: web-3 skipped, then the end with web-1 and web-2.
        PolicyRun ended = PolicySamples.PartialRun();
        PolicyRun skipped = PolicySamples.RunningRun();
        skipped.Version = 6;
        skipped.Targets.Clear();
        skipped.Targets.Add(ended.Targets.Single(t => t.Vm == "web-3"));
        PolicyRun end = ended.Clone();
        end.Targets.Clear();
        end.Targets.AddRange(ended.Targets.Where(t => t.Vm != "web-3"));
        FakeCallInvoker invoker = new FakeCallInvoker()
            .On<RunPolicyRequest, RunPolicyResponse>("RunPolicy", _ => new RunPolicyResponse { Run = PolicySamples.RunningRun() })
            .OnStream<WatchPolicyRunRequest, WatchPolicyRunResponse>(
                "WatchPolicyRun",
                new WatchPolicyRunResponse { Run = PolicySamples.RunningRun(), Full = true },
                new WatchPolicyRunResponse { Run = skipped },
                new WatchPolicyRunResponse { Run = end });

        CliRun run = await CliRun.RunAsync(invoker, "policy", "run", "nightly-web", "--watch", "--format", "json");

        Assert.Equal(ExitCodes.RunFailed, run.ExitCode);
        var watch = Assert.IsType<WatchPolicyRunRequest>(invoker.Calls.Single(c => c.Method == "WatchPolicyRun").Request);
        Assert.True(watch.ChangesOnly);
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal("partial", json.RootElement.GetProperty("state").GetString());
        var targets = json.RootElement.GetProperty("targets").EnumerateArray()
            .Select(t => $"{t.GetProperty("host").GetString()}/{t.GetProperty("vm").GetString()}={t.GetProperty("status").GetString()}")
            .ToList();
        Assert.Equal(["kvm-01/web-1=succeeded", "kvm-01/web-2=succeeded", "kvm-03/web-3=skipped"], targets);
        // web-3's change came while the run went on (elapsed counted to now), web-2's with the end.
        Assert.Contains(Lines(run.Stderr), l => l.EndsWith("  kvm-03/web-3  skipped  host unavailable: no live silo serves host 'kvm-03'", StringComparison.Ordinal));
        Assert.Contains("0:01:35  kvm-01/web-2  succeeded  kvm-01/web-2/b-20261126-020042-0d0e0f", Lines(run.Stderr));
    }

    [Fact]
    public async Task WatchJson_FullMessageAfterChanges_ReplacesWhatWasKept()
    {
        PolicyRun other = PolicySamples.RunningRun();
        other.Targets.Clear();
        other.Targets.Add(PolicySamples.PartialRun().Targets.Single(t => t.Vm == "web-1"));
        PolicyRun ended = PolicySamples.PartialRun();
        ended.Targets.RemoveAt(ended.Targets.IndexOf(ended.Targets.Single(t => t.Vm == "web-2")));
        FakeCallInvoker invoker = new FakeCallInvoker()
            .OnStream<WatchPolicyRunRequest, WatchPolicyRunResponse>(
                "WatchPolicyRun",
                new WatchPolicyRunResponse { Run = PolicySamples.RunningRun(), Full = true },
                new WatchPolicyRunResponse { Run = other },
                new WatchPolicyRunResponse { Run = ended, Full = true });

        CliRun run = await CliRun.RunAsync(invoker, "policy", "watch", "nightly-web", PolicySamples.RunId, "--format", "json");

        string[] updates = Lines(run.Stdout);
        Assert.Equal(3, updates.Length);
        using JsonDocument last = JsonDocument.Parse(updates[^1]);
        Assert.Equal(["web-1", "web-3"], last.RootElement.GetProperty("targets").EnumerateArray().Select(t => t.GetProperty("vm").GetString()));
        using JsonDocument second = JsonDocument.Parse(updates[1]);
        Assert.Equal(3, second.RootElement.GetProperty("targets").GetArrayLength());
    }

    [Fact]
    public async Task RunWatch_Failed_ExitsRunFailedWithTheRunsError()
    {
        FakeCallInvoker invoker = Watching(PolicySamples.FailedRun());

        CliRun run = await CliRun.RunAsync(invoker, "policy", "run", "nightly-web", "--watch", "--format", "json");

        Assert.Equal(ExitCodes.RunFailed, run.ExitCode);
        Assert.EndsWith(
            $"error: policy nightly-web: run {PolicySamples.RunId} ended failed: the fleet index is empty{NL}",
            run.Stderr,
            StringComparison.Ordinal);
    }

    [Fact]
    public async Task RunWatchTable_NotATerminal_ProgressOnStderr_TheEndedRunOnStdout()
    {
        FakeCallInvoker invoker = Watching(PolicySamples.RunningRun(), PolicySamples.PartialRun());

        CliRun run = await CliRun.RunAsync(invoker, "policy", "run", "nightly-web", "--watch");

        Assert.Equal(ExitCodes.RunFailed, run.ExitCode);
        Assert.Contains("State:     partial", Lines(run.Stdout));
        Assert.Contains("kvm-03/web-3  skipped           0        -  -                                      host unavailable: no live silo serves host 'kvm-03'", Lines(run.Stdout));
        Assert.DoesNotContain('\u001b', run.Stdout);
        Assert.StartsWith($"policy nightly-web: run {PolicySamples.RunId} admitted; waiting for it to end{NL}", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task RunWatchTable_Terminal_RedrawsAFrameWithARowPerVm()
    {
        FakeCallInvoker invoker = Watching(PolicySamples.RunningRun(), PolicySamples.CompletedRun());
        var clock = new FixedClock(PolicySamples.Start.AddSeconds(30));

        CliRun run = await CliRun.RunWithAsync(
            invoker, environment => environment with { Clock = clock, Interactive = true }, "policy", "run", "nightly-web", "--watch");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        // Frame 1: heading, summary, table header, 3 rows; then cursor up 6 lines and clear, then frame 2.
        const string Redraw = "\u001b[6F\u001b[J";
        int redraw = run.Stdout.IndexOf(Redraw, StringComparison.Ordinal);
        Assert.True(redraw > 0, run.Stdout);
        string[] first = Lines(run.Stdout[..redraw]);
        string[] second = Lines(run.Stdout[(redraw + Redraw.Length)..]);
        Assert.Equal(
            [
                $"nightly-web  {PolicySamples.RunId}  running  elapsed 0:00:30",
                "  targets 3: 1 running, 2 pending  (budgets 1 per host, 4 fleet-wide)",
                "  VM            STATUS   ATTEMPTS     TIME  RESULT                                 REASON",
                "  kvm-01/web-1  running         1  0:00:29  kvm-01/web-1/b-20261126-020001-0a0b0c  -",
                "  kvm-01/web-2  pending         0        -  -                                      host budget full (1)",
                "  kvm-03/web-3  pending         0        -  -                                      -",
            ],
            first);
        Assert.Equal($"nightly-web  {PolicySamples.RunId}  completed  elapsed 0:01:35", second[0]);
        Assert.Equal("  targets 3: 3 succeeded  (budgets 1 per host, 4 fleet-wide)", second[1]);
        Assert.Equal("  kvm-01/web-1  succeeded         1  0:00:41  kvm-01/web-1/b-20261126-020001-0a0b0c  -", second[3]);
        Assert.Empty(run.Stderr);
    }

    [Fact]
    public async Task RunWatchTable_NarrowTerminal_NoFrameLineIsWiderThanIt()
    {
        FakeCallInvoker invoker = Watching(PolicySamples.RunningRun(), PolicySamples.PartialRun());

        CliRun run = await CliRun.RunWithAsync(
            invoker, environment => environment with { Interactive = true, TerminalWidth = () => 60 }, "policy", "run", "nightly-web", "--watch");

        Assert.Equal(ExitCodes.RunFailed, run.ExitCode);
        string[] lines = Lines(run.Stdout.Replace("\u001b[0m", "", StringComparison.Ordinal));
        Assert.All(lines, line => Assert.True(line.Length <= 59 + "\u001b[8F\u001b[J".Length, line));
        Assert.Contains(lines, line => line.Length == 59);
    }

    [Fact]
    public async Task WatchJson_OneCompactRunPerUpdate_ExitsOkWhenCompleted()
    {
        var invoker = new FakeCallInvoker().OnStream<WatchPolicyRunRequest, WatchPolicyRunResponse>(
            "WatchPolicyRun",
            new WatchPolicyRunResponse { Run = PolicySamples.RunningRun() },
            new WatchPolicyRunResponse { Run = PolicySamples.CompletedRun() });

        CliRun run = await CliRun.RunAsync(invoker, "policy", "watch", "nightly-web", PolicySamples.RunId, "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        string[] lines = Lines(run.Stdout);
        Assert.Equal(["running", "completed"], lines.Select(line => JsonDocument.Parse(line).RootElement.GetProperty("state").GetString()));
        Assert.All(lines, line => Assert.StartsWith("{\"run_id\":", line, StringComparison.Ordinal));
        Assert.Empty(run.Stderr);
    }

    [Fact]
    public async Task WatchTable_NotATerminal_OneLinePerChange()
    {
        var invoker = new FakeCallInvoker().OnStream<WatchPolicyRunRequest, WatchPolicyRunResponse>(
            "WatchPolicyRun",
            new WatchPolicyRunResponse { Run = PolicySamples.RunningRun() },
            new WatchPolicyRunResponse { Run = PolicySamples.PartialRun() });
        var clock = new FixedClock(PolicySamples.Start.AddSeconds(30));

        CliRun run = await CliRun.RunWithAsync(
            invoker, environment => environment with { Clock = clock }, "policy", "watch", "nightly-web", PolicySamples.RunId);

        Assert.Equal(ExitCodes.RunFailed, run.ExitCode);
        Assert.Equal(
            [
                "0:00:30  kvm-01/web-1  running",
                "0:00:30  run running: 3: 1 running, 2 pending",
                "0:01:35  kvm-01/web-1  succeeded  kvm-01/web-1/b-20261126-020001-0a0b0c",
                "0:01:35  kvm-01/web-2  succeeded  kvm-01/web-2/b-20261126-020042-0d0e0f",
                "0:01:35  kvm-03/web-3  skipped  host unavailable: no live silo serves host 'kvm-03'",
                "0:01:35  run partial: 3: 2 succeeded, 1 skipped",
            ],
            Lines(run.Stdout));
        Assert.DoesNotContain('\u001b', run.Stdout);
    }

    [Fact]
    public async Task Watch_StreamEndsBeforeTheRun_ExitsUnavailableSayingHowToFollowAgain()
    {
        var invoker = new FakeCallInvoker().OnStream<WatchPolicyRunRequest, WatchPolicyRunResponse>(
            "WatchPolicyRun", new WatchPolicyRunResponse { Run = PolicySamples.RunningRun() });

        CliRun run = await CliRun.RunAsync(invoker, "policy", "watch", "nightly-web", PolicySamples.RunId, "--format", "json");

        Assert.Equal(ExitCodes.Unavailable, run.ExitCode);
        Assert.Contains($"run 'orchestrator policy watch nightly-web {PolicySamples.RunId}' to follow it again", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Watch_MalformedRunId_IsAUsageError()
    {
        CliRun run = await CliRun.RunAsync(new FakeCallInvoker(), "policy", "watch", "nightly-web", "p/1");

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.StartsWith("error: argument RUN_ID: 'p/1' is not a run id", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task RunsTable_NewestFirstWithTriggerStateDurationAndTargets()
    {
        PolicyRun retry = PolicySamples.CompletedRun();
        retry.RunId = "p-20261126-030000-def456";
        retry.Trigger = PolicyRunTrigger.Retry;
        retry.RetryOf = PolicySamples.RunId;
        var invoker = new FakeCallInvoker().On<ListPolicyRunsRequest, ListPolicyRunsResponse>(
            "ListPolicyRuns", _ => new ListPolicyRunsResponse { Runs = { retry, PolicySamples.PartialRun() } });

        CliRun run = await CliRun.RunAsync(invoker, "policy", "runs", "nightly-web", "--limit", "5");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var request = Assert.IsType<ListPolicyRunsRequest>(Assert.Single(invoker.Calls).Request);
        Assert.Equal(("nightly-web", 5), (request.Name, request.Limit));
        Assert.Equal(
            [
                "RUN                       TRIGGER  STATE      STARTED               DURATION  TARGETS                    ERROR",
                "p-20261126-030000-def456  retry    completed  2026-11-26T02:00:00Z   0:01:35  3: 3 succeeded             -",
                "p-20261126-020000-abc123  manual   partial    2026-11-26T02:00:00Z   0:01:35  3: 2 succeeded, 1 skipped  -",
            ],
            Lines(run.Stdout));
    }

    [Fact]
    public async Task Runs_WithoutLimit_SendsZeroForTheServersDefault()
    {
        var invoker = new FakeCallInvoker().On<ListPolicyRunsRequest, ListPolicyRunsResponse>("ListPolicyRuns", _ => new ListPolicyRunsResponse());

        CliRun run = await CliRun.RunAsync(invoker, "policy", "runs", "nightly-web");

        Assert.Equal($"No runs.{NL}", run.Stdout);
        Assert.Equal(0, Assert.IsType<ListPolicyRunsRequest>(Assert.Single(invoker.Calls).Request).Limit);
    }

    [Fact]
    public async Task RunsJson_ArrayOfRunsInTheServersOrder()
    {
        var invoker = new FakeCallInvoker().On<ListPolicyRunsRequest, ListPolicyRunsResponse>(
            "ListPolicyRuns", _ => new ListPolicyRunsResponse { Runs = { PolicySamples.PartialRun(), PolicySamples.FailedRun() } });

        CliRun run = await CliRun.RunAsync(invoker, "policy", "runs", "nightly-web", "--format", "json");

        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal(["partial", "failed"], json.RootElement.EnumerateArray().Select(r => r.GetProperty("state").GetString()));
    }

    [Fact]
    public async Task Runs_WithRunId_ShowsThatRun()
    {
        var invoker = new FakeCallInvoker().On<GetPolicyRunRequest, GetPolicyRunResponse>(
            "GetPolicyRun", _ => new GetPolicyRunResponse { Run = PolicySamples.PartialRun() });

        CliRun run = await CliRun.RunAsync(invoker, "policy", "runs", "nightly-web", PolicySamples.RunId, "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var request = Assert.IsType<GetPolicyRunRequest>(Assert.Single(invoker.Calls).Request);
        Assert.Equal(("nightly-web", PolicySamples.RunId), (request.Name, request.RunId));
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal(JsonValueKind.Object, json.RootElement.ValueKind);
        Assert.Equal(PolicySamples.RunId, json.RootElement.GetProperty("run_id").GetString());
    }

    [Theory]
    [InlineData("0")]
    [InlineData("1001")]
    public async Task Runs_LimitOutOfRange_IsAUsageError(string limit)
    {
        CliRun run = await CliRun.RunAsync(new FakeCallInvoker(), "policy", "runs", "nightly-web", "--limit", limit);

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.StartsWith($"error: --limit: {limit} is not between 1 and 1000", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Runs_RunIdAndLimit_IsAUsageError()
    {
        CliRun run = await CliRun.RunAsync(new FakeCallInvoker(), "policy", "runs", "nightly-web", PolicySamples.RunId, "--limit", "3");

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.StartsWith("error: --limit lists runs; it does not go with RUN_ID", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Help_ListsThePolicyVerbs()
    {
        CliRun run = await CliRun.RunAsync(new FakeCallInvoker(), "policy", "--help");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        foreach (string verb in new[] { "apply", "list", "show", "delete", "run", "watch", "runs" })
        {
            Assert.Matches($@"(?m)^\s+{verb}\b", run.Stdout);
        }
    }
}
