using Orchestrator.Grains;
using Orchestrator.Grains.Fleet;
using Orchestrator.Grains.Policies;
using Orchestrator.Hypervisor;
using Orchestrator.UnitTests.Observability;

namespace Orchestrator.UnitTests.Policies;

/// <summary>
/// The policy and compliance metrics as a MeterListener sees them, on the shared policy cluster. Every test uses its
/// own policy names and labels, and picks its measurements by them (and compliance by this cluster's fleet id), so it
/// neither depends on nor disturbs the other tests.
/// </summary>
[Collection(PolicyClusterCollection.Name)]
public sealed class PolicyMetricsTests(PolicyClusterFixture fixture) : IDisposable
{
    private const long MiB = 1L << 20;

    /// <summary>A host in the fleet index that no silo serves, ever (unlike the fixture's late host, which a test starts).</summary>
    private const string NoSiloHost = "kvm-77";

    private readonly MetricCapture _metrics = new();

    public void Dispose() => _metrics.Dispose();

    private IFleetGrain Fleet => fixture.Grains.GetGrain<IFleetGrain>(GrainKeys.Fleet);

    private string FleetId => fixture.Cluster.Options.ServiceId;

    private IBackupPolicyGrain Policy(string name) => fixture.Grains.GetGrain<IBackupPolicyGrain>(name);

    private async Task AddVmAsync(string host, string name, string group)
    {
        fixture.Hypervisors[host].AddDomain(name, DomainPowerState.Running, [("vda", "qcow2", 64 * MiB)], new Dictionary<string, string> { ["group"] = group });
        await fixture.Grains.GetGrain<IHostGrain>(host).SyncInventoryAsync();
    }

    private PolicySpec BackupPolicy(string name, string group, TimeSpan? rpo = null) => new()
    {
        Name = name,
        Kind = PolicyKind.LiveBackup,
        Selector = new PolicySelector { Labels = new Dictionary<string, string> { ["group"] = group } },
        Retention = new RetentionPolicy(KeepLast: 2),
        Target = Path.Combine(fixture.BackupRoot, "{policy}", "{host}"),
        Concurrency = new PolicyConcurrency(1, 2),
        Rpo = rpo ?? TimeSpan.FromHours(1),
    };

    private static async Task<PolicyRunView> WaitEndAsync(IBackupPolicyGrain policy, PolicyRunView run)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!run.IsTerminal)
        {
            Assert.True(DateTime.UtcNow < deadline, $"run {run.RunId} still running");
            run = await policy.WaitRunAsync(run.RunId, run.Version, TimeSpan.FromSeconds(5));
        }

        return run;
    }

    /// <summary>The observable measurements of one instrument whose tags include every pair given.</summary>
    private IReadOnlyList<MetricCapture.Recorded> Observed(string instrument, params (string Key, string Value)[] tags) =>
        [.. _metrics.Observe().Where(m => m.Instrument == instrument && tags.All(t => m.Tag(t.Key) == t.Value))];

    /// <summary>Polls an observable instrument (a few seconds at most) until <paramref name="until"/> holds; returns the last reading.</summary>
    private async Task<IReadOnlyList<MetricCapture.Recorded>> ObservedSoonAsync(Func<IReadOnlyList<MetricCapture.Recorded>, bool> until, string instrument, params (string Key, string Value)[] tags)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        var seen = Observed(instrument, tags);
        while (!until(seen) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
            seen = Observed(instrument, tags);
        }

        return seen;
    }

    /// <summary>A policy's compliance gauge as "ok=N out_of_rpo=N never=N"; "none" while it reports nothing for the policy.</summary>
    private string PolicyCompliance(string policy)
    {
        var byStatus = Observed(ComplianceMetrics.PolicyVmsName, ("fleet", FleetId), ("policy", policy)).ToDictionary(m => m.Tag("status")!, m => m.Value);
        return byStatus.Count == 0 ? "none" : $"ok={byStatus["ok"]} out_of_rpo={byStatus["out_of_rpo"]} never={byStatus["never"]}";
    }

    /// <summary>Polls the gauges (the fleet grain refreshes them on its timer) until <paramref name="expected"/> shows; returns the last reading.</summary>
    private async Task<string> WaitPolicyComplianceAsync(string policy, string expected)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        var seen = PolicyCompliance(policy);
        while (seen != expected && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
            seen = PolicyCompliance(policy);
        }

        return seen;
    }

    [Fact]
    public async Task Run_TwoVmsOnTwoHosts_OneRunCountedCompletedAndOneSucceededTargetPerVm()
    {
        await AddVmAsync("kvm-01", "mr-1", "mr");
        await AddVmAsync("kvm-03", "mr-2", "mr");
        var policy = Policy("metrics-run");
        await policy.ApplyAsync(BackupPolicy("metrics-run", "mr"));

        var run = await WaitEndAsync(policy, await policy.RunNowAsync());

        Assert.Equal(PolicyRunState.Completed, run.State);
        var runs = _metrics.Of(PolicyMetrics.RunsName, ("policy", "metrics-run"));
        var counted = Assert.Single(runs);
        Assert.Equal(1, counted.Value);
        Assert.Equal(("completed", "manual", "live-backup"), (counted.Tag("outcome"), counted.Tag("trigger"), counted.Tag("kind")));
        var duration = Assert.Single(_metrics.Of(PolicyMetrics.RunDurationName, ("policy", "metrics-run")));
        Assert.Equal("completed", duration.Tag("outcome"));
        Assert.Equal((run.EndedAt!.Value - run.StartedAt).TotalSeconds, duration.Value, precision: 3);

        var targets = _metrics.Of(PolicyMetrics.TargetsName, ("policy", "metrics-run"));
        Assert.Equal(["kvm-01", "kvm-03"], targets.Select(t => t.Tag("host")).Order(StringComparer.Ordinal));
        Assert.All(targets, t => Assert.Equal(("succeeded", "live-backup", 1.0), (t.Tag("status"), t.Tag("kind"), t.Value)));

        // One admission per VM, each its admitted_at minus the run's start.
        var waits = _metrics.Of(PolicyMetrics.AdmissionWaitName, ("policy", "metrics-run"));
        Assert.Equal(["kvm-01", "kvm-03"], waits.Select(w => w.Tag("host")).Order(StringComparer.Ordinal));
        foreach (var target in run.Targets)
        {
            var wait = Assert.Single(waits, w => w.Tag("host") == target.Host);
            Assert.Equal((target.AdmittedAt!.Value - run.StartedAt).TotalSeconds, wait.Value, precision: 3);
        }

        // Each VM's own backup counted with its host, VM and outcome; its bytes with host and VM.
        foreach (var target in run.Targets)
        {
            var backup = Assert.Single(_metrics.Of(Telemetry.BackupsName, ("host", target.Host), ("vm", target.Vm)));
            Assert.Equal("completed", backup.Tag("outcome"));
            Assert.Contains(_metrics.Of(Telemetry.BytesCopiedName, ("host", target.Host), ("vm", target.Vm)), b => b.Value > 0);
        }

        // The gauge follows what the grain persists: a watcher sees the run end one storage write before that.
        var active = Assert.Single(await ObservedSoonAsync(m => m.Count == 1 && m[0].Value == 0, PolicyMetrics.ActiveRunsName, ("policy", "metrics-run")));
        Assert.Equal(0, active.Value);
        Assert.Empty(Observed(PolicyMetrics.PendingRetriesName, ("policy", "metrics-run")));
    }

    [Fact]
    public async Task Run_VmOfAHostWithoutSilo_CountedSkippedAndShownPendingRetryUntilThePolicyIsDeleted()
    {
        await AddVmAsync("kvm-02", "ms-1", "ms");
        await Fleet.ReportInventoryAsync(NoSiloHost, [new VmIndexEntry(NoSiloHost, "ms-77", Guid.NewGuid(), true, new Dictionary<string, string> { ["group"] = "ms" }, null, null)]);
        var policy = Policy("metrics-skip");
        await policy.ApplyAsync(BackupPolicy("metrics-skip", "ms"));
        try
        {
            var run = await WaitEndAsync(policy, await policy.RunNowAsync());

            Assert.Equal(PolicyRunState.Partial, run.State);
            var counted = Assert.Single(_metrics.Of(PolicyMetrics.RunsName, ("policy", "metrics-skip")));
            Assert.Equal("partial", counted.Tag("outcome"));
            var targets = _metrics.Of(PolicyMetrics.TargetsName, ("policy", "metrics-skip"));
            Assert.Equal(2, targets.Count);
            var skipped = Assert.Single(targets, t => t.Tag("status") == "skipped");
            Assert.Equal(NoSiloHost, skipped.Tag("host"));
            Assert.Equal(("kvm-02", "succeeded"), (targets.Single(t => t != skipped).Tag("host"), targets.Single(t => t != skipped).Tag("status")));

            // Never admitted: no admission wait for the skipped VM.
            Assert.Equal(["kvm-02"], _metrics.Of(PolicyMetrics.AdmissionWaitName, ("policy", "metrics-skip")).Select(w => w.Tag("host")));

            // Published when the grain persists the ended run, which a watcher may see one storage write earlier.
            var pending = Assert.Single(await ObservedSoonAsync(m => m.Count == 1, PolicyMetrics.PendingRetriesName, ("policy", "metrics-skip")));
            Assert.Equal((NoSiloHost, 1.0), (pending.Tag("host"), pending.Value));
        }
        finally
        {
            Assert.True(await policy.DeleteAsync());
            await Fleet.ReportInventoryAsync(NoSiloHost, []);
        }

        Assert.Empty(Observed(PolicyMetrics.PendingRetriesName, ("policy", "metrics-skip")));
        Assert.Empty(Observed(PolicyMetrics.ActiveRunsName, ("policy", "metrics-skip")));
    }

    [Fact]
    public async Task ComplianceGauges_BeforeAndAfterARun_ReportTheFleetGrainsNumbers()
    {
        await AddVmAsync("kvm-01", "mc-1", "mc");
        await AddVmAsync("kvm-03", "mc-2", "mc");
        var policy = Policy("metrics-rpo");
        await policy.ApplyAsync(BackupPolicy("metrics-rpo", "mc"));

        // Selected and never backed up; refreshed by the fleet grain's timer, no compliance query needed.
        var before = await WaitPolicyComplianceAsync("metrics-rpo", "ok=0 out_of_rpo=0 never=2");
        await AssertFleetGaugeMatchesComplianceAsync();

        await WaitEndAsync(policy, await policy.RunNowAsync());
        var after = await WaitPolicyComplianceAsync("metrics-rpo", "ok=2 out_of_rpo=0 never=0");

        // A second policy over the same VMs with a 1 s RPO: the backups just made age out of it with time alone.
        await Policy("metrics-rpo-short").ApplyAsync(BackupPolicy("metrics-rpo-short", "mc", rpo: TimeSpan.FromSeconds(1)));
        var aged = await WaitPolicyComplianceAsync("metrics-rpo-short", "ok=0 out_of_rpo=2 never=0");
        await AssertFleetGaugeMatchesComplianceAsync();
        await Policy("metrics-rpo-short").DeleteAsync();
        var deleted = await WaitPolicyComplianceAsync("metrics-rpo-short", "none");

        Assert.Equal("ok=0 out_of_rpo=0 never=2", before);
        Assert.Equal("ok=2 out_of_rpo=0 never=0", after);
        Assert.Equal("ok=0 out_of_rpo=2 never=0", aged);
        Assert.Equal("none", deleted);
    }

    /// <summary>
    /// The fleet-wide gauge equals the counts of present VMs by status in the fleet grain's own answer. Other tests'
    /// runs may change the fleet meanwhile: a reading counts only when two answers around it agree.
    /// </summary>
    private async Task AssertFleetGaugeMatchesComplianceAsync()
    {
        string[] statuses = ["ok", "out_of_rpo", "never", "unprotected"];
        for (var attempt = 0; ; attempt++)
        {
            var first = Counts(await Fleet.GetComplianceAsync());
            var gauge = Observed(ComplianceMetrics.VmsName, ("fleet", FleetId)).ToDictionary(m => m.Tag("status")!, m => (long)m.Value);
            var second = Counts(await Fleet.GetComplianceAsync());
            if (first.SequenceEqual(second) || attempt == 5)
            {
                Assert.Equal(statuses.Order(), gauge.Keys.Order());
                Assert.Equal(first, statuses.Select(s => gauge[s]));
                Assert.True(first[3] > 0, "the fleet has unprotected VMs (the fixture's seeded ones)");
                return;
            }
        }

        static long[] Counts(IReadOnlyList<VmCompliance> vms)
        {
            var present = vms.Where(v => v.Present).ToList();
            return
            [
                present.Count(v => v.Status == ComplianceStatus.Ok),
                present.Count(v => v.Status == ComplianceStatus.OutOfRpo),
                present.Count(v => v.Status == ComplianceStatus.Never),
                present.Count(v => v.Status == ComplianceStatus.Unprotected),
            ];
        }
    }
}
