using System.Diagnostics;
using System.Text.Json;
using Grpc.Net.Client;
using Orchestrator.Api.V1;
using Orchestrator.IntegrationTests.Infrastructure;

namespace Orchestrator.IntegrationTests.Fleet;

/// <summary>
/// The fleet's first policy run, shared by the tests that look at it from different sides (backups, budgets,
/// compliance, trace): `policy apply -f` of a live-backup policy that selects all four guests, `fleet compliance`
/// before any backup exists, `policy run --watch`, then `fleet compliance` again. Done once, by whichever test asks
/// first; every test that makes backups asks first, so "before" really is before any backup of these VMs.
/// </summary>
public sealed class FirstPolicyRun
{
    public const string Policy = "fleet-nightly";

    /// <summary>1 MiB/s: each guest's copy (3 MiB of data past its counter ring) takes about 3 s.</summary>
    public const string Bandwidth = "1MiB";

    public const int PerHost = 1;

    public const int Fleet = 2;

    public required string PolicyFile { get; init; }

    /// <summary>stdout of `policy apply -f FILE --format json`.</summary>
    public required JsonElement Applied { get; init; }

    /// <summary>`fleet compliance --format json` after the apply, before the run.</summary>
    public required JsonElement ComplianceBefore { get; init; }

    /// <summary>The ended run as `policy run NAME --watch --format json` printed it.</summary>
    public required JsonElement Run { get; init; }

    /// <summary>The same run through gRPC (GetPolicyRun), for its timestamps at full precision (the CLI prints seconds).</summary>
    public required PolicyRun Record { get; init; }

    /// <summary>`fleet compliance --format json` after the run.</summary>
    public required JsonElement ComplianceAfter { get; init; }

    /// <summary>Wall-clock time of `policy run --watch`.</summary>
    public required TimeSpan Duration { get; init; }

    public required string WatchStderr { get; init; }

    public string RunId => Run.GetProperty("run_id").GetString()!;

    /// <summary>The policy file, YAML as an operator writes it.</summary>
    public static string Yaml(FleetFixture fixture, string name = Policy) => $"""
        # Live backup of every fleet-test guest on every host: one VM per host at a time, two over the fleet.
        name: {name}
        kind: live-backup
        description: fleet end-to-end test
        selector:
          hosts: ["f*"]
          labels:
            {FleetFixture.SuiteLabel}: {FleetFixture.SuiteValue}
        retention:
          keep_last: 5
        target: {fixture.TargetTemplate}
        quiesce: off
        verify: true
        bandwidth: {Bandwidth}
        concurrency:
          per_host: {PerHost}
          fleet: {Fleet}
        rpo: 1h
        """;

    public static async Task<FirstPolicyRun> ExecuteAsync(FleetFixture fixture)
    {
        var file = fixture.WritePolicyFile(Policy, Yaml(fixture));
        var applied = await fixture.CliJsonAsync("policy", "apply", "-f", file);
        var before = await fixture.CliJsonAsync("fleet", "compliance");

        var sw = Stopwatch.StartNew();
        var watch = await fixture.CliAsync("policy", "run", Policy, "--watch", "--format", "json");
        var duration = sw.Elapsed;
        Assert.True(watch.ExitCode == 0, $"policy run --watch: {ProcessRunner.Describe(watch)}\n{fixture.SiloLogs()}");
        JsonElement run;
        using (var json = JsonDocument.Parse(watch.StandardOutput))
        {
            run = json.RootElement.Clone();
        }

        var record = (await new PolicyService.PolicyServiceClient(GrpcChannel.ForAddress(fixture.Entry.GrpcEndpoint))
            .GetPolicyRunAsync(new GetPolicyRunRequest { Name = Policy, RunId = run.GetProperty("run_id").GetString() })).Run;
        var after = await fixture.CliJsonAsync("fleet", "compliance");
        return new FirstPolicyRun
        {
            PolicyFile = file,
            Applied = applied,
            ComplianceBefore = before,
            Run = run,
            Record = record,
            ComplianceAfter = after,
            Duration = duration,
            WatchStderr = watch.StandardError,
        };
    }
}
