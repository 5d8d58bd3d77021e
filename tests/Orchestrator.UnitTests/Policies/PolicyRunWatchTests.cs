using Orchestrator.Grains.Policies;
using Orchestrator.Hypervisor;

namespace Orchestrator.UnitTests.Policies;

/// <summary>Watching a policy run by its changes (WaitRunChangesAsync): whole once, then only what changed.</summary>
[Collection(PolicyClusterCollection.Name)]
public sealed class PolicyRunWatchTests(PolicyClusterFixture fixture, Xunit.Abstractions.ITestOutputHelper output)
{
    private const long MiB = 1L << 20;

    private static readonly string[] Hosts = Cluster.ThreeHostClusterFixture.Hosts;

    private IBackupPolicyGrain Policy(string name) => fixture.Grains.GetGrain<IBackupPolicyGrain>(name);

    private async Task AddVmsAsync(string group, int perHost, long size)
    {
        foreach (var host in Hosts)
        {
            for (var i = 0; i < perHost; i++)
            {
                fixture.Hypervisors[host].AddDomain($"{group}-{host}-{i:D3}", DomainPowerState.Running, [("vda", "qcow2", size)], new Dictionary<string, string> { ["group"] = group });
            }

            await fixture.Grains.GetGrain<IHostGrain>(host).SyncInventoryAsync();
        }
    }

    private PolicySpec Spec(string name, int perHost, int fleet, long bandwidth = 0) => new()
    {
        Name = name,
        Kind = PolicyKind.LiveBackup,
        Selector = new PolicySelector { Labels = new Dictionary<string, string> { ["group"] = name } },
        Retention = new RetentionPolicy(KeepLast: 2),
        Target = Path.Combine(fixture.BackupRoot, "{policy}", "{host}"),
        BandwidthBytesPerSecond = bandwidth,
        Concurrency = new PolicyConcurrency(perHost, fleet),
    };

    /// <summary>Follows the run by its changes to the end; returns every answer.</summary>
    private static async Task<List<PolicyRunChanges>> FollowAsync(IBackupPolicyGrain policy, string runId, PolicyRunChanges first, TimeSpan limit)
    {
        var answers = new List<PolicyRunChanges> { first };
        var deadline = DateTime.UtcNow + limit;
        var last = first;
        while (!last.Run.IsTerminal)
        {
            Assert.True(DateTime.UtcNow < deadline, $"run {runId} still running: {last.Counts}");
            last = await policy.WaitRunChangesAsync(runId, last.Cursor, TimeSpan.FromSeconds(5));
            answers.Add(last);
        }

        return answers;
    }

    private static Dictionary<string, PolicyTargetView> Rebuild(IEnumerable<PolicyRunChanges> answers)
    {
        var map = new Dictionary<string, PolicyTargetView>(StringComparer.Ordinal);
        foreach (var answer in answers)
        {
            if (answer.Full)
            {
                map.Clear();
            }

            foreach (var target in answer.Run.Targets)
            {
                map[target.Key] = target;
            }
        }

        return map;
    }

    [Fact]
    public async Task WaitRunChanges_RunOf150Vms_WholeOnceThenOnlyChangedTargets_RebuildsTheRunExactly()
    {
        await AddVmsAsync("watch-delta", 50, 4 * MiB);
        var policy = Policy("watch-delta");
        await policy.ApplyAsync(Spec("watch-delta", perHost: 10, fleet: 20));
        var run = await policy.RunNowAsync();

        var first = await policy.WaitRunChangesAsync(run.RunId, since: null, TimeSpan.Zero);
        var answers = await FollowAsync(policy, run.RunId, first, TimeSpan.FromSeconds(120));
        var final = await policy.GetRunAsync(run.RunId);
        var sentAfterFirst = answers.Skip(1).Sum(a => a.Run.Targets.Count);
        output.WriteLine($"150 VMs: {answers.Count} answers, {first.Run.Targets.Count} targets in the first, {sentAfterFirst} after it");

        Assert.True(first.Full);
        Assert.Equal(150, first.Run.Targets.Count);
        Assert.All(answers.Skip(1), a => Assert.False(a.Full));
        Assert.Equal(PolicyRunState.Completed, final.State);
        Assert.Equal(final.Targets.ToDictionary(t => t.Key), Rebuild(answers));
        Assert.Equal(new PolicyRunCounts(0, 0, 150, 0, 0), answers[^1].Counts);
        Assert.Equal(final.Version, answers[^1].Run.Version);

        // Each VM changes a few times (admitted, backup started, ended): never the whole run per answer.
        Assert.True(sentAfterFirst <= 150 * 4, $"{sentAfterFirst} targets sent after the first answer for 150 VMs");
        Assert.All(answers.Skip(1), a => Assert.Equal(a.Run.Targets.Count, a.Run.Targets.Select(t => t.Key).Distinct().Count()));
    }

    [Fact]
    public async Task WaitRunChanges_PartReactivatedMidRun_SendsThatHostsTargetsWholeOnceAndTheRunStillRebuilds()
    {
        await AddVmsAsync("watch-part", 4, 512 * MiB);
        var policy = Policy("watch-part");
        await policy.ApplyAsync(Spec("watch-part", perHost: 1, fleet: 3, bandwidth: 256 * MiB));
        var run = await policy.RunNowAsync();
        var first = await policy.WaitRunChangesAsync(run.RunId, since: null, TimeSpan.Zero);

        // Wait until kvm-01's part answers from its log (it started), then its activation goes away as with its silo.
        var answers = new List<PolicyRunChanges> { first };
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (answers[^1].Cursor.Parts.Single(p => p.Host == "kvm-01").Epoch <= 0)
        {
            Assert.True(DateTime.UtcNow < deadline, "kvm-01's part never answered");
            answers.Add(await policy.WaitRunChangesAsync(run.RunId, answers[^1].Cursor, TimeSpan.FromSeconds(2)));
        }

        var epochBefore = answers[^1].Cursor.Parts.Single(p => p.Host == "kvm-01").Epoch;
        Assert.False(answers[^1].Run.IsTerminal);
        await fixture.Cluster.DeactivateAsync((Orleans.Runtime.IAddressable)fixture.Grains.GetGrain<IPolicyHostRunGrain>("kvm-01/watch-part"));
        var after = await policy.WaitRunChangesAsync(run.RunId, answers[^1].Cursor, TimeSpan.FromSeconds(10));
        answers.Add(after);
        answers.AddRange((await FollowAsync(policy, run.RunId, after, TimeSpan.FromSeconds(120))).Skip(1));
        var final = await policy.GetRunAsync(run.RunId);

        Assert.NotEqual(epochBefore, after.Cursor.Parts.Single(p => p.Host == "kvm-01").Epoch);
        Assert.Equal(4, after.Run.Targets.Count(t => t.Host == "kvm-01"));
        Assert.Equal(PolicyRunState.Completed, final.State);
        Assert.Equal(final.Targets.ToDictionary(t => t.Key), Rebuild(answers));
    }

    [Fact]
    public async Task WaitRunChanges_CursorOfAnotherRun_RefusedNamingSince()
    {
        await AddVmsAsync("watch-bad", 1, 4 * MiB);
        var policy = Policy("watch-bad");
        await policy.ApplyAsync(Spec("watch-bad", perHost: 1, fleet: 3));
        var run = await policy.RunNowAsync();
        var first = await policy.WaitRunChangesAsync(run.RunId, since: null, TimeSpan.Zero);

        var e = await Assert.ThrowsAsync<OrchestratorException>(() => policy.WaitRunChangesAsync(run.RunId, first.Cursor with { RunId = "p-20261207-000000-other0" }, TimeSpan.Zero));

        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
        Assert.Contains("since", e.Message, StringComparison.Ordinal);
        await FollowAsync(policy, run.RunId, first, TimeSpan.FromSeconds(60));
    }
}
