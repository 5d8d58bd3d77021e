using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using Grpc.Net.Client;
using Orchestrator.Api.V1;
using Orchestrator.IntegrationTests.Infrastructure;
using Orchestrator.IntegrationTests.Telemetry;
using Xunit.Abstractions;

namespace Orchestrator.IntegrationTests.Fleet;

/// <summary>
/// Fleet-wide policies end to end, driven through the real CLI against a real cluster: PostgreSQL, three libvirt hosts,
/// three silo processes. The must-show scenarios of issue #6.
/// </summary>
[Collection(FleetCollection.Name)]
public sealed class FleetPolicyTests(FleetFixture fixture, ITestOutputHelper output)
{
    private const string Policy = FirstPolicyRun.Policy;

    [Fact]
    public async Task PolicyRun_LiveBackupOnThreeHosts_EveryVmBackedUpVerifiedOnItsOwnHostWithinBudgets()
    {
        var first = await fixture.FirstRunAsync();
        output.WriteLine($"policy run --watch took {first.Duration.TotalSeconds:0.0} s\n{first.WatchStderr}");
        var applied = first.Applied;
        Assert.Equal("created", applied.GetProperty("result").GetString());
        Assert.Equal(1, applied.GetProperty("version").GetInt32());

        var run = first.Run;
        Assert.Equal("completed", run.GetProperty("state").GetString());
        Assert.Equal(Policy, run.GetProperty("policy").GetString());
        Assert.Equal(1, run.GetProperty("policy_version").GetInt32());
        Assert.Equal("live-backup", run.GetProperty("kind").GetString());
        Assert.Equal("manual", run.GetProperty("trigger").GetString());
        Assert.Equal(FirstPolicyRun.PerHost, run.GetProperty("concurrency").GetProperty("per_host").GetInt32());
        Assert.Equal(FirstPolicyRun.Fleet, run.GetProperty("concurrency").GetProperty("fleet").GetInt32());

        var targets = run.GetProperty("targets").EnumerateArray().ToList();
        Assert.Equal(FleetFixture.Guests.Select(g => g.Key).Order(StringComparer.Ordinal), targets.Select(TargetKey));
        foreach (var target in targets)
        {
            var guest = FleetFixture.Guests.Single(g => g.Key == TargetKey(target));
            Assert.Equal("succeeded", target.GetProperty("status").GetString());
            Assert.Equal(1, target.GetProperty("attempts").GetInt32());
            Assert.NotEqual(JsonValueKind.Null, target.GetProperty("admitted_at").ValueKind);
            Assert.NotEqual(JsonValueKind.Null, target.GetProperty("released_at").ValueKind);
            await AssertBackedUpOnItsHostAsync(guest, target.GetProperty("backup_run").GetString()!, policyVersion: 1);
        }

        // Budgets, from the run record's admission intervals (gRPC: full precision; the CLI prints whole seconds).
        var intervals = first.Record.Targets
            .Select(t => (t.Host, Start: t.AdmittedAt.ToDateTimeOffset(), End: t.ReleasedAt.ToDateTimeOffset()))
            .ToList();
        foreach (var (host, start, end) in intervals)
        {
            output.WriteLine($"{host}: held a slot {start:HH:mm:ss.fff} .. {end:HH:mm:ss.fff} ({(end - start).TotalSeconds:0.00} s)");
            Assert.True(end > start, $"{host}: released {end:O} before admitted {start:O}");
        }

        foreach (var host in FleetFixture.HostNames)
        {
            var perHost = MaxConcurrent(intervals.Where(i => i.Host == host).Select(i => (i.Start, i.End)));
            Assert.True(perHost <= FirstPolicyRun.PerHost, $"{perHost} VMs of {host} at once; budget {FirstPolicyRun.PerHost}");
        }

        var fleet = MaxConcurrent(intervals.Select(i => (i.Start, i.End)));
        output.WriteLine($"fleet-wide at most {fleet} at once");
        // Never above the budget, and the budget was used: with four VMs on three hosts two ran side by side.
        Assert.Equal(FirstPolicyRun.Fleet, fleet);
        // fa's two VMs ran one after the other.
        var fa = intervals.Where(i => i.Host == "fa").OrderBy(i => i.Start).ToList();
        Assert.Equal(2, fa.Count);
        Assert.True(fa[1].Start >= fa[0].End, $"fa: second VM admitted {fa[1].Start:O} before the first released {fa[0].End:O}");
    }

    [Fact]
    public async Task Compliance_SelectedVms_NeverBeforeTheFirstRunAndOkAfterIt()
    {
        var first = await fixture.FirstRunAsync();
        var startedAt = DateTimeOffset.Parse(first.Run.GetProperty("started_at").GetString()!, CultureInfo.InvariantCulture);
        var endedAt = DateTimeOffset.Parse(first.Run.GetProperty("ended_at").GetString()!, CultureInfo.InvariantCulture);
        foreach (var guest in FleetFixture.Guests)
        {
            var before = ComplianceOf(first.ComplianceBefore, guest);
            Assert.True(before.GetProperty("status").GetString() == "never", before.ToString());
            Assert.Equal(JsonValueKind.Null, before.GetProperty("last_backup_at").ValueKind);
            var policyBefore = Assert.Single(before.GetProperty("policies").EnumerateArray(), p => p.GetProperty("policy").GetString() == Policy);
            Assert.Equal("never", policyBefore.GetProperty("status").GetString());
            Assert.Equal(3600, policyBefore.GetProperty("rpo").GetDouble());

            var after = ComplianceOf(first.ComplianceAfter, guest);
            Assert.True(after.GetProperty("status").GetString() == "ok", after.ToString());
            var policyAfter = Assert.Single(after.GetProperty("policies").EnumerateArray(), p => p.GetProperty("policy").GetString() == Policy);
            Assert.Equal("ok", policyAfter.GetProperty("status").GetString());
            var lastGood = DateTimeOffset.Parse(policyAfter.GetProperty("last_good_at").GetString()!, CultureInfo.InvariantCulture);
            // Whole seconds in the CLI's JSON: the newest good backup is this run's.
            Assert.InRange(lastGood, startedAt.AddSeconds(-1), endedAt.AddSeconds(1));
        }
    }

    [Fact]
    public async Task Trace_OnePolicyRun_SpansAllThreeSilosWithThePolicyRunAndEveryVmsBackupRun()
    {
        var first = await fixture.FirstRunAsync();
        var traceId = first.Run.GetProperty("trace_id").GetString();
        Assert.Matches("^[0-9a-f]{32}$", traceId);
        var backupRuns = first.Run.GetProperty("targets").EnumerateArray()
            .ToDictionary(TargetKey, t => t.GetProperty("backup_run").GetString()!.Split('/')[2]);

        // Every process exports what has ended on its own schedule: wait until each backup.run's chain of parents up to
        // policy.run has arrived (or a minute passed; the assertions below then say what is missing).
        bool Complete(IReadOnlyList<ReceivedSpan> s)
        {
            var t = s.Where(x => x.TraceId == traceId).ToList();
            var ids = t.GroupBy(x => x.SpanId).ToDictionary(g => g.Key, g => g.First());
            var top = t.FirstOrDefault(x => x.Name == "policy.run");
            var runs = t.Where(x => x.Name == "backup.run").ToList();
            return top is not null && runs.Count >= FleetFixture.Guests.Length && runs.All(r => Ancestors(r, ids).Any(a => a.SpanId == top.SpanId));
        }

        IReadOnlyList<ReceivedSpan> spans;
        try
        {
            spans = await fixture.Otlp.WaitForAsync(Complete, TimeSpan.FromSeconds(60), $"policy.run and four backup.run below it in trace {traceId}");
        }
        catch (TimeoutException e)
        {
            output.WriteLine(e.Message);
            spans = fixture.Otlp.Spans;
        }

        var trace = spans.Where(s => s.TraceId == traceId).ToList();
        output.WriteLine($"{trace.Count} spans in trace {traceId}");
        foreach (var span in trace.Where(s => s.Name.StartsWith("policy.", StringComparison.Ordinal) || s.Name.StartsWith("backup.", StringComparison.Ordinal)))
        {
            output.WriteLine(span.ToString());
        }

        Assert.Equal(FleetFixture.HostNames, trace.Select(s => s.ServiceInstance).Distinct().Order(StringComparer.Ordinal));
        var policyRun = Assert.Single(trace, s => s.Name == "policy.run");
        Assert.Equal(first.RunId, policyRun.Attribute("run"));
        Assert.Equal(Policy, policyRun.Attribute("policy"));

        var byId = trace.GroupBy(s => s.SpanId).ToDictionary(g => g.Key, g => g.First());
        foreach (var guest in FleetFixture.Guests)
        {
            // Each VM's workflow ran on its own host's silo, and hangs below the policy run (one tree across processes).
            var backup = Assert.Single(trace, s => s.Name == "backup.run" && s.Attribute("vm") == guest.Name && s.Attribute("host") == guest.Host);
            Assert.Equal(guest.Host, backup.ServiceInstance);
            Assert.Equal(backupRuns[guest.Key], backup.Attribute("run"));
            Assert.True(Ancestors(backup, byId).Any(a => a.SpanId == policyRun.SpanId), $"backup.run of {guest} is not below policy.run:\n{string.Join('\n', Ancestors(backup, byId))}");
        }
    }

    [Fact]
    public async Task PolicyRun_HostSiloKilledDuringRun_OthersFinishItsVmsSkippedThenRetriedAndNoOverlayLeft()
    {
        // After the first run, so that its "before" compliance never sees this test's backups.
        var first = await fixture.FirstRunAsync();
        var victim = fixture.Silos["fc"];
        var victimGuests = FleetFixture.GuestsOn("fc").Select(g => g.Key).ToList();
        var policies = new PolicyService.PolicyServiceClient(GrpcChannel.ForAddress(fixture.Entry.GrpcEndpoint));
        var sw = Stopwatch.StartNew();
        try
        {
            var watching = fixture.CliAsync(TimeSpan.FromMinutes(2), "policy", "run", Policy, "--watch", "--format", "json");
            var runId = await WaitForNewRunAsync(policies, known: [first.RunId], watching);
            await victim.KillAsync();
            output.WriteLine($"{sw.Elapsed.TotalSeconds:0.0} s: run {runId} started; fc's silo killed");

            // It ends within seconds once fc's silo is declared dead (about 10-30 s after the kill).
            var watch = await watching;
            output.WriteLine($"{sw.Elapsed.TotalSeconds:0.0} s: run ended\n{watch.StandardError}");
            // Not completed: the CLI exits 7 and still prints the ended run.
            Assert.True(watch.ExitCode == 7, ProcessRunner.Describe(watch) + fixture.SiloLogs());
            using var json = JsonDocument.Parse(watch.StandardOutput);
            var run = json.RootElement;
            Assert.Equal(runId, run.GetProperty("run_id").GetString());
            Assert.Equal("partial", run.GetProperty("state").GetString());
            foreach (var target in run.GetProperty("targets").EnumerateArray())
            {
                var guest = FleetFixture.Guests.Single(g => g.Key == TargetKey(target));
                if (guest.Host == "fc")
                {
                    Assert.True(target.GetProperty("status").GetString() == "skipped", target.ToString());
                    Assert.Contains("host unavailable", target.GetProperty("reason").GetString(), StringComparison.Ordinal);
                }
                else
                {
                    Assert.True(target.GetProperty("status").GetString() == "succeeded", target.ToString());
                    await AssertBackedUpOnItsHostAsync(guest, target.GetProperty("backup_run").GetString()!, policyVersion: 1);
                }
            }

            var pending = (await fixture.CliJsonAsync("policy", "show", Policy)).GetProperty("pending_retries");
            Assert.Equal(victimGuests, pending.EnumerateArray().Select(p => p.GetString()));

            // The silo comes back on the same ports; the policy notices and retries the skipped VMs by itself.
            victim.Start();
            await victim.WaitReadyAsync(TimeSpan.FromMinutes(3));
            output.WriteLine($"{sw.Elapsed.TotalSeconds:0.0} s: fc's silo ready again");
            var retry = await WaitForRetryAsync(runId, TimeSpan.FromMinutes(3));
            output.WriteLine($"{sw.Elapsed.TotalSeconds:0.0} s: retry {retry.GetProperty("run_id").GetString()} ended {retry.GetProperty("state").GetString()}");
            Assert.True(retry.GetProperty("state").GetString() == "completed", retry.ToString());
            var retried = retry.GetProperty("targets").EnumerateArray().ToList();
            Assert.Equal(victimGuests, retried.Select(TargetKey));
            foreach (var target in retried)
            {
                Assert.True(target.GetProperty("status").GetString() == "succeeded", target.ToString());
                await AssertBackedUpOnItsHostAsync(FleetFixture.Guests.Single(g => g.Key == TargetKey(target)), target.GetProperty("backup_run").GetString()!, policyVersion: 1);
            }

            Assert.Empty((await fixture.CliJsonAsync("policy", "show", Policy)).GetProperty("pending_retries").EnumerateArray());

            // The restarted silo's VMs (their state read back from PostgreSQL) are listed again, labels included.
            var vms = (await fixture.CliJsonAsync("vm", "list")).EnumerateArray().ToList();
            Assert.Equal(FleetFixture.Guests.Select(g => g.Key).Order(StringComparer.Ordinal), vms.Select(v => v.GetProperty("key").GetString()));
            Assert.All(vms, v => Assert.Equal(FleetFixture.SuiteValue, v.GetProperty("labels").GetProperty(FleetFixture.SuiteLabel).GetString()));
            await AssertNoOverlayAnywhereAsync();
        }
        catch
        {
            output.WriteLine($"{sw.Elapsed.TotalSeconds:0.0} s: failed");
            var runs = await fixture.CliAsync(TimeSpan.FromSeconds(60), "policy", "runs", Policy, "--format", "json");
            output.WriteLine($"policy runs {Policy}: {ProcessRunner.Describe(runs)}");
            output.WriteLine(fixture.SiloLogs(300));
            throw;
        }
        finally
        {
            if (victim.HasExited)
            {
                victim.Start();
                await victim.WaitReadyAsync(TimeSpan.FromMinutes(3));
            }
        }
    }

    public static TheoryData<string, string, int, string?, string> BadPolicies => new()
    {
        // name, file, line of the error, field named, words of the reason
        { "bad-yaml", "name: bad-yaml\nkind: live-backup\nselector:\n  hosts: [\"fa\", \"fb\"\n  vms: [\"web-*\"]\n", 5, null, "malformed YAML" },
        { "bad-field", "name: bad-field\nkind: live-backup\nretension:\n  keep_last: 3\n", 3, "retension", "unknown" },
        { "bad-cron", "name: bad-cron\nkind: live-backup\nselector:\n  labels: {suite: fleet}\nschedule:\n  cron: \"61 * * * *\"\n  time_zone: UTC\n", 6, "schedule.cron", "cron" },
        { "bad-budget", "name: bad-budget\nkind: live-backup\nconcurrency:\n  per_host: 0\n  fleet: 2\n", 4, "concurrency.per_host", "between 1" },
        { "bad-escape", "name: bad-escape\nkind: live-backup\ntarget: /backups/../etc/{vm}\n", 3, "target", ".." },
        { "bad-outside", "name: bad-outside\nkind: live-backup\ndescription: a target outside every configured backup root\ntarget: /srv/elsewhere/{host}/{vm}\n", 4, "target", "root" },
    };

    [Theory]
    [MemberData(nameof(BadPolicies))]
    public async Task PolicyApply_BadInput_Exit5NamingFieldAndLineAndNothingStored(string name, string yaml, int line, string? field, string reason)
    {
        var file = fixture.WritePolicyFile(name, yaml);
        var apply = await fixture.CliAsync("policy", "apply", "-f", file);
        output.WriteLine(apply.StandardError);
        Assert.True(apply.ExitCode == 5, ProcessRunner.Describe(apply));
        Assert.Empty(apply.StandardOutput);
        var message = apply.StandardError;
        Assert.Contains($"{file}:{line}", message, StringComparison.Ordinal);
        if (field is not null)
        {
            Assert.Contains($": {field}: ", message, StringComparison.Ordinal);
        }

        Assert.Contains(reason, message, StringComparison.OrdinalIgnoreCase);
        await AssertNotStoredAsync(name);
    }

    [Fact]
    public async Task PolicyApply_ExistingNameWithAnotherKind_Exit5NamingKindAndTheStoredPolicyUnchanged()
    {
        const string Name = "dup-kind";
        var checkpoints = fixture.WritePolicyFile(Name + "-checkpoint", $"name: {Name}\nkind: checkpoint\nselector:\n  labels: {{suite: fleet}}\nretention:\n  keep_last: 2\n");
        var created = await fixture.CliJsonAsync("policy", "apply", "-f", checkpoints);
        Assert.Equal("created", created.GetProperty("result").GetString());
        Assert.Equal(1, created.GetProperty("version").GetInt32());
        try
        {
            var backups = fixture.WritePolicyFile(Name + "-backup", $"name: {Name}\nkind: live-backup\nselector:\n  labels: {{suite: fleet}}\n");
            var apply = await fixture.CliAsync("policy", "apply", "-f", backups);
            output.WriteLine(apply.StandardError);
            Assert.True(apply.ExitCode == 5, ProcessRunner.Describe(apply));
            Assert.Contains($"{backups}:2", apply.StandardError, StringComparison.Ordinal);
            Assert.Contains(": kind: ", apply.StandardError, StringComparison.Ordinal);

            var shown = await fixture.CliJsonAsync("policy", "show", Name);
            Assert.Equal("checkpoint", shown.GetProperty("spec").GetProperty("kind").GetString());
            Assert.Equal(1, shown.GetProperty("version").GetInt32());
            var listed = (await fixture.CliJsonAsync("policy", "list")).EnumerateArray().Single(p => p.GetProperty("name").GetString() == Name);
            Assert.Equal(1, listed.GetProperty("version").GetInt32());
        }
        finally
        {
            await fixture.CliAsync("policy", "delete", Name);
        }
    }

    private static string TargetKey(JsonElement target) => $"{target.GetProperty("host").GetString()}/{target.GetProperty("vm").GetString()}";

    private static JsonElement ComplianceOf(JsonElement compliance, FleetGuest guest) =>
        compliance.GetProperty("vms").EnumerateArray().Single(v => v.GetProperty("host").GetString() == guest.Host && v.GetProperty("vm").GetString() == guest.Name);

    /// <summary>The most slots held at one instant; an interval holds its slot from its start up to (not at) its end.</summary>
    private static int MaxConcurrent(IEnumerable<(DateTimeOffset Start, DateTimeOffset End)> intervals)
    {
        var events = intervals.SelectMany(i => new[] { (At: i.Start, Delta: 1), (At: i.End, Delta: -1) })
            .OrderBy(e => e.At)
            .ThenBy(e => e.Delta);
        int now = 0, max = 0;
        foreach (var (_, delta) in events)
        {
            now += delta;
            max = Math.Max(max, now);
        }

        return max;
    }

    private static IEnumerable<ReceivedSpan> Ancestors(ReceivedSpan span, IReadOnlyDictionary<string, ReceivedSpan> byId)
    {
        var seen = new HashSet<string>();
        for (var at = span; at.ParentSpanId is { } parent && byId.TryGetValue(parent, out var up) && seen.Add(parent); at = up)
        {
            yield return up;
        }
    }

    /// <summary>
    /// `backup show` says completed and verified, by this policy, on the VM's own host; the set is under that host's
    /// directory as the target template puts it; every file is there with the checksum recorded; the copy is a
    /// consistent point-in-time image of the counter guest.
    /// </summary>
    private async Task AssertBackedUpOnItsHostAsync(FleetGuest guest, string backupRun, int policyVersion)
    {
        Assert.StartsWith($"{guest.Host}/{guest.Name}/b-", backupRun, StringComparison.Ordinal);
        var backup = await fixture.CliJsonAsync("backup", "show", backupRun);
        Assert.True(backup.GetProperty("step").GetString() == "completed", backup.ToString());
        Assert.Equal(guest.Host, backup.GetProperty("host").GetString());
        Assert.Equal(Policy, backup.GetProperty("policy").GetString());
        Assert.Equal(policyVersion, backup.GetProperty("policy_version").GetInt32());
        var set = backup.GetProperty("backup_set_path").GetString()!;
        Assert.Equal(Path.Combine(fixture.HostBackupDir(guest.Host), Policy, guest.Name, backupRun.Split('/')[2]), set);
        Assert.True(File.Exists(Path.Combine(set, "manifest.json")), $"no manifest in {set}");
        var images = new List<string>();
        foreach (var disk in backup.GetProperty("disks").EnumerateArray())
        {
            Assert.True(disk.GetProperty("verified").GetBoolean() && disk.GetProperty("committed").GetBoolean(), disk.ToString());
            var path = disk.GetProperty("backup_path").GetString()!;
            Assert.Equal(set, Path.GetDirectoryName(path));
            await using (var file = File.OpenRead(path))
            {
                Assert.Equal(disk.GetProperty("sha256").GetString(), Convert.ToHexStringLower(await SHA256.HashDataAsync(file)));
            }

            images.Add(path);
        }

        Assert.NotEmpty(images);
        var counter = await fixture.Labs[guest.Host].CounterCheckAsync([.. images]);
        Assert.True(counter.Consistent, $"{backupRun}: {counter.Json}");
    }

    private async Task AssertNotStoredAsync(string name)
    {
        var show = await fixture.CliAsync("policy", "show", name);
        Assert.True(show.ExitCode == 3, ProcessRunner.Describe(show));
        var list = await fixture.CliJsonAsync("policy", "list");
        Assert.DoesNotContain(list.EnumerateArray(), p => p.GetProperty("name").GetString() == name);
    }

    /// <summary>No disk of any guest on an overlay: neither in the fleet's view (re-read from each host) nor in libvirt.</summary>
    private async Task AssertNoOverlayAnywhereAsync()
    {
        var overlays = await fixture.CliJsonAsync("fleet", "overlays", "--refresh");
        Assert.Empty(overlays.GetProperty("unavailable_hosts").EnumerateArray());
        Assert.True(overlays.GetProperty("disks").GetArrayLength() == 0, overlays.ToString());

        var all = (await fixture.CliJsonAsync("fleet", "overlays", "--all", "--refresh")).GetProperty("disks").EnumerateArray().ToList();
        foreach (var guest in FleetFixture.Guests)
        {
            var lab = fixture.Labs[guest.Host];
            var basePath = lab.DiskPath(guest.Name, "vda", "raw");
            var disk = Assert.Single(all, d => d.GetProperty("host").GetString() == guest.Host && d.GetProperty("vm").GetString() == guest.Name);
            Assert.Equal(1, disk.GetProperty("chain_depth").GetInt32());
            Assert.False(disk.GetProperty("orchestrator_overlay").GetBoolean());
            Assert.Equal(basePath, disk.GetProperty("active_path").GetString());

            // libvirt's own view: the base is the active image and nothing is below or above it.
            var blk = await lab.VirshAsync("domblklist", guest.Name);
            Assert.Contains(basePath, blk, StringComparison.Ordinal);
            Assert.DoesNotContain(".orch-", blk, StringComparison.Ordinal);
            var xml = await lab.VirshAsync("dumpxml", guest.Name);
            Assert.DoesNotContain("<backingStore type=", xml, StringComparison.Ordinal);
            Assert.Equal("running", (await lab.VirshAsync("domstate", guest.Name)).Trim());
        }

        Assert.All(fixture.Labs.Values, lab => Assert.Empty(lab.LeftoverOverlays()));
    }

    private static async Task<string> WaitForNewRunAsync(PolicyService.PolicyServiceClient policies, IReadOnlyCollection<string> known, Task<ProcessResult> watching)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(1);
        while (true)
        {
            var runs = (await policies.ListPolicyRunsAsync(new ListPolicyRunsRequest { Name = Policy, Limit = 5 })).Runs;
            if (runs.FirstOrDefault(r => !known.Contains(r.RunId)) is { } run)
            {
                return run.RunId;
            }

            if (watching.IsCompleted)
            {
                Assert.Fail("policy run --watch ended before its run was listed: " + ProcessRunner.Describe(await watching));
            }

            Assert.True(DateTime.UtcNow < deadline, "the new run was not listed within a minute");
            await Task.Delay(100);
        }
    }

    /// <summary>Polls `policy runs` until the retry run of <paramref name="runId"/> ended; returns it.</summary>
    private async Task<JsonElement> WaitForRetryAsync(string runId, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var runs = await fixture.CliJsonAsync("policy", "runs", Policy);
            var retry = runs.EnumerateArray().FirstOrDefault(r => r.GetProperty("trigger").GetString() == "retry" && r.GetProperty("retry_of").GetString() == runId);
            if (retry.ValueKind == JsonValueKind.Object && retry.GetProperty("state").GetString() != "running")
            {
                return retry;
            }

            Assert.True(DateTime.UtcNow < deadline, $"no ended retry of {runId} within {timeout.TotalSeconds:0} s: {runs}\n{fixture.SiloLogs()}");
            await Task.Delay(TimeSpan.FromSeconds(2));
        }
    }
}
