using Microsoft.Extensions.DependencyInjection;
using Orchestrator.Grains.Policies;
using Orchestrator.Hypervisor;

namespace Orchestrator.UnitTests.Policies;

/// <summary>Fleet policies on the simulated three-host cluster: apply/versioning, runs under budgets, skips and retries, compliance.</summary>
[Collection(PolicyClusterCollection.Name)]
public sealed class PolicyRunTests(PolicyClusterFixture fixture, Xunit.Abstractions.ITestOutputHelper output) : IDisposable
{
    private const long MiB = 1L << 20;

    // Spans are only created when someone listens: the orchestrator's and Orleans's (which carry the context across silos).
    private readonly System.Diagnostics.ActivityListener _listener = Listen();

    public void Dispose() => _listener.Dispose();

    private static System.Diagnostics.ActivityListener Listen()
    {
        var listener = new System.Diagnostics.ActivityListener
        {
            ShouldListenTo = source => source.Name == Grains.Telemetry.Name || source.Name.StartsWith("Microsoft.Orleans", StringComparison.Ordinal),
            Sample = (ref System.Diagnostics.ActivityCreationOptions<System.Diagnostics.ActivityContext> _) => System.Diagnostics.ActivitySamplingResult.AllDataAndRecorded,
        };
        System.Diagnostics.ActivitySource.AddActivityListener(listener);
        return listener;
    }

    private IFleetGrain Fleet => fixture.Grains.GetGrain<IFleetGrain>(GrainKeys.Fleet);

    private IBackupPolicyGrain Policy(string name) => fixture.Grains.GetGrain<IBackupPolicyGrain>(name);

    private async Task AddVmAsync(string host, string name, string group, string format = "qcow2", long size = 64 * MiB)
    {
        fixture.Hypervisors[host].AddDomain(name, DomainPowerState.Running, [("vda", format, size)], new Dictionary<string, string> { ["group"] = group });
        await fixture.Grains.GetGrain<IHostGrain>(host).SyncInventoryAsync();
    }

    private PolicySpec BackupPolicy(string name, string group, int perHost = 1, int fleet = 2, long bandwidth = 0) => new()
    {
        Name = name,
        Kind = PolicyKind.LiveBackup,
        Selector = new PolicySelector { Labels = new Dictionary<string, string> { ["group"] = group } },
        Retention = new RetentionPolicy(KeepLast: 3),
        Target = Path.Combine(fixture.BackupRoot, "{policy}", "{host}"),
        BandwidthBytesPerSecond = bandwidth,
        Concurrency = new PolicyConcurrency(perHost, fleet),
        Rpo = TimeSpan.FromHours(1),
    };

    private static async Task<PolicyRunView> WaitEndAsync(IBackupPolicyGrain policy, PolicyRunView run, TimeSpan? limit = null)
    {
        var deadline = DateTime.UtcNow + (limit ?? TimeSpan.FromSeconds(60));
        while (!run.IsTerminal)
        {
            Assert.True(DateTime.UtcNow < deadline, $"run {run.RunId} still running: {string.Join(", ", run.Targets.Select(t => $"{t.Key}={t.Status}"))}");
            run = await policy.WaitRunAsync(run.RunId, run.Version, TimeSpan.FromSeconds(5));
        }

        return run;
    }

    [Fact]
    public async Task RunNow_BudgetWideOpen_PartAdmitsAtMostTwiceTheSiloSlotsAndEveryVmOnce()
    {
        const int Vms = 40;
        for (var i = 0; i < Vms; i++)
        {
            fixture.Hypervisors["kvm-02"].AddDomain($"cap-{i:D2}", DomainPowerState.Running, [("vda", "qcow2", 4 * MiB)], new Dictionary<string, string> { ["group"] = "cap" });
        }

        await fixture.Grains.GetGrain<IHostGrain>("kvm-02").SyncInventoryAsync();
        var policy = Policy("cap");
        await policy.ApplyAsync(BackupPolicy("cap", "cap", perHost: Vms, fleet: Vms));

        var run = await WaitEndAsync(policy, await policy.RunNowAsync(), TimeSpan.FromSeconds(90));

        // The budget would admit all 40 at once; the part admits 2 x 8 slots, each next one as another ends.
        Assert.Equal(PolicyRunState.Completed, run.State);
        Assert.Equal(Vms, run.Targets.Count);
        Assert.All(run.Targets, t => Assert.Equal(PolicyTargetStatus.Succeeded, t.Status));
        Assert.Equal(2 * PolicyClusterFixture.MaxConcurrentPerSilo, RunRecordChecks.MaxOverlap(run.Targets));
        foreach (var target in run.Targets)
        {
            var own = await fixture.Grains.GetGrain<IVirtualMachineGrain>(target.Key).ListBackupsAsync();
            Assert.Single(own, b => b.PolicyRun == run.RunId);
        }
    }

    [Fact]
    public async Task Run_LevelAutoFullEveryTwo_FullThenIncrementalThenFullByCount()
    {
        await AddVmAsync("kvm-01", "inc-policy-1", "inc-policy");
        var policy = Policy("inc-auto");
        await policy.ApplyAsync(BackupPolicy("inc-auto", "inc-policy") with { Level = BackupLevel.Auto, FullEveryRuns = 2 });

        var levels = new List<string?>();
        for (var i = 0; i < 3; i++)
        {
            var run = await WaitEndAsync(policy, await policy.RunNowAsync());
            var target = Assert.Single(run.Targets);
            var backup = await fixture.Grains.GetGrain<IVirtualMachineGrain>(target.Key).GetBackupAsync(target.BackupRun!.Split('/')[^1]);
            Assert.True(backup.Step == BackupStep.Completed, $"{backup.Step}: {backup.Error}");
            levels.Add(backup.Level);
        }

        Assert.Equal("full incremental full", string.Join(' ', levels));
    }

    [Fact]
    public async Task Apply_SameSpecTwice_UnchangedAndAChangeBumpsTheVersion()
    {
        var policy = Policy("versioned");
        var spec = BackupPolicy("versioned", "none");

        var first = await policy.ApplyAsync(spec);
        var again = await policy.ApplyAsync(spec);
        var changed = await policy.ApplyAsync(spec with { Rpo = TimeSpan.FromHours(2) });

        Assert.True(first.Created);
        Assert.Equal(1, first.Policy.Version);
        Assert.False(again.Changed);
        Assert.Equal(1, again.Policy.Version);
        Assert.True(changed.Changed);
        Assert.False(changed.Created);
        Assert.Equal(2, changed.Policy.Version);
        Assert.Contains(await Fleet.ListPoliciesAsync(), p => p.Spec.Name == "versioned" && p.Version == 2);
    }

    [Fact]
    public async Task Apply_KindChangeOfExistingPolicy_RefusedOnKindAndNothingChanges()
    {
        var policy = Policy("kind-fixed");
        await policy.ApplyAsync(BackupPolicy("kind-fixed", "none"));

        var e = await Assert.ThrowsAsync<OrchestratorException>(() => policy.ApplyAsync(new PolicySpec { Name = "kind-fixed", Kind = PolicyKind.Checkpoint, Retention = new RetentionPolicy(KeepLast: 2) }));

        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
        Assert.Equal("kind", e.Field);
        var view = await policy.GetAsync();
        Assert.Equal(PolicyKind.LiveBackup, view.Spec.Kind);
        Assert.Equal(1, view.Version);
    }

    [Fact]
    public async Task Apply_InvalidSpec_NothingIsStored()
    {
        var policy = Policy("never-stored");

        var e = await Assert.ThrowsAsync<OrchestratorException>(() => policy.ApplyAsync(BackupPolicy("never-stored", "none") with { Schedule = new PolicySchedule("every day") }));

        Assert.Equal("schedule.cron", e.Field);
        var missing = await Assert.ThrowsAsync<OrchestratorException>(() => policy.GetAsync());
        Assert.Equal(ErrorCode.NotFound, missing.Code);
        Assert.DoesNotContain(await Fleet.ListPoliciesAsync(), p => p.Spec.Name == "never-stored");
    }

    [Fact]
    public async Task Apply_NameDiffersFromKey_RefusedOnName()
    {
        var e = await Assert.ThrowsAsync<OrchestratorException>(() => Policy("one-name").ApplyAsync(BackupPolicy("other-name", "none")));
        Assert.Equal("name", e.Field);
    }

    [Fact]
    public async Task RunNow_LiveBackupOnThreeHosts_EveryVmBackedUpOnItsHostWithinBudgets()
    {
        await AddVmAsync("kvm-01", "pa-1", "pa");
        await AddVmAsync("kvm-01", "pa-2", "pa");
        await AddVmAsync("kvm-01", "pa-3", "pa");
        await AddVmAsync("kvm-02", "pa-4", "pa");
        await AddVmAsync("kvm-03", "pa-5", "pa");
        var unprotected = (await Fleet.GetComplianceAsync()).Single(c => c.Key == "kvm-02/pa-4");
        var policy = Policy("budgets");
        await policy.ApplyAsync(BackupPolicy("budgets", "pa", perHost: 1, fleet: 2, bandwidth: 64 * MiB));
        var before = (await Fleet.GetComplianceAsync()).Single(c => c.Key == "kvm-02/pa-4");

        var run = await WaitEndAsync(policy, await policy.RunNowAsync());

        Assert.Equal(PolicyRunState.Completed, run.State);
        Assert.Equal(1, run.PolicyVersion);
        Assert.Equal(["kvm-01/pa-1", "kvm-01/pa-2", "kvm-01/pa-3", "kvm-02/pa-4", "kvm-03/pa-5"], run.Targets.Select(t => t.Key).Order(StringComparer.Ordinal));
        Assert.All(run.Targets, t => Assert.Equal(PolicyTargetStatus.Succeeded, t.Status));
        Assert.Equal(2, RunRecordChecks.MaxOverlap(run.Targets));
        Assert.Equal(1, RunRecordChecks.MaxOverlap(run.Targets.Where(t => t.Host == "kvm-01")));
        Assert.NotNull(run.TraceId);
        foreach (var target in run.Targets)
        {
            Assert.StartsWith($"{target.Host}/{target.Vm}/b-", target.BackupRun, StringComparison.Ordinal);
            var backup = await fixture.Grains.GetGrain<IVirtualMachineGrain>(target.Key).GetBackupAsync(target.BackupRun!.Split('/')[^1]);
            Assert.Equal(BackupStep.Completed, backup.Step);
            Assert.Equal(("budgets", 1, run.RunId), (backup.Policy, backup.PolicyVersion, backup.PolicyRun));
            Assert.Equal(run.TraceId, backup.TraceId);
            Assert.Equal(Path.Combine(fixture.BackupRoot, "budgets", target.Host, target.Vm, backup.RunKey.Split('/')[^1]), backup.BackupSetPath);
        }

        var after = (await Fleet.GetComplianceAsync()).Single(c => c.Key == "kvm-02/pa-4");
        Assert.Equal(ComplianceStatus.Unprotected, unprotected.Status);
        Assert.Equal(ComplianceStatus.Never, before.Status);
        Assert.Equal(ComplianceStatus.Ok, after.Status);
        Assert.Equal(ComplianceStatus.Ok, Assert.Single(after.Policies, p => p.Policy == "budgets").Status);
        Assert.Empty(await fixture.Grains.GetGrain<IFleetGrain>(GrainKeys.Fleet).SelectAsync(new PolicySelector { Labels = new Dictionary<string, string> { ["group"] = "nobody" } }));
    }

    [Fact]
    public async Task RunNow_HostWithoutSilo_SkipsItsVmsAndRetriesThemWhenTheSiloJoins()
    {
        await AddVmAsync("kvm-02", "pb-1", "pb");

        // kvm-09's VM is in the fleet's index (seen by an earlier sync), but no silo serves kvm-09 now.
        var late = PolicyClusterFixture.LateHost;
        await Fleet.ReportInventoryAsync(late, [new VmIndexEntry(late, "pb-9", Guid.NewGuid(), true, new Dictionary<string, string> { ["group"] = "pb" }, null, null)]);
        var policy = Policy("skips");
        await policy.ApplyAsync(BackupPolicy("skips", "pb"));

        var first = await WaitEndAsync(policy, await policy.RunNowAsync());

        Assert.Equal(PolicyRunState.Partial, first.State);
        Assert.Equal(PolicyTargetStatus.Succeeded, first.Targets.Single(t => t.Host == "kvm-02").Status);
        var skipped = first.Targets.Single(t => t.Host == late);
        Assert.Equal(PolicyTargetStatus.Skipped, skipped.Status);
        Assert.Contains("host unavailable", skipped.Reason, StringComparison.Ordinal);
        Assert.Equal([$"{late}/pb-9"], (await policy.GetAsync()).PendingRetries);
        Assert.Equal(ComplianceStatus.Never, (await Fleet.GetComplianceAsync()).Single(c => c.Key == $"{late}/pb-9").Status);

        // The host's silo comes up with that VM: the policy notices and runs a retry for it alone.
        await fixture.Cluster.StartAdditionalSiloAsync();
        fixture.Hypervisors[late].AddDomain("pb-9", DomainPowerState.Running, [("vda", "qcow2", 64 * MiB)], new Dictionary<string, string> { ["group"] = "pb" });
        await SyncWhenPlacedAsync(late);
        PolicyRunView? retry = null;
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (retry is null)
        {
            Assert.True(DateTime.UtcNow < deadline, "no retry run started");
            retry = (await policy.ListRunsAsync()).FirstOrDefault(r => r.Trigger == PolicyRunTrigger.Retry);
            await Task.Delay(200);
        }

        retry = await WaitEndAsync(policy, retry);
        Assert.True(retry.State == PolicyRunState.Completed, $"{retry.State}: {string.Join("; ", retry.Targets.Select(t => $"{t.Key} {t.Status} {t.Reason}"))}");
        Assert.Equal(first.RunId, retry.RetryOf);
        Assert.Equal($"{late}/pb-9", Assert.Single(retry.Targets).Key);
        Assert.Empty((await policy.GetAsync()).PendingRetries);
        Assert.Equal(ComplianceStatus.Ok, (await Fleet.GetComplianceAsync()).Single(c => c.Key == $"{late}/pb-9").Status);
    }

    [Fact]
    public async Task RunNow_CheckpointPolicy_CheckpointsQcow2VmsPrunesByRetentionAndFailsRawOnes()
    {
        await AddVmAsync("kvm-03", "pc-1", "pc");
        await AddVmAsync("kvm-01", "pc-raw", "pc", format: "raw");
        var policy = Policy("hourly-cp");
        await policy.ApplyAsync(new PolicySpec
        {
            Name = "hourly-cp",
            Kind = PolicyKind.Checkpoint,
            Selector = new PolicySelector { Labels = new Dictionary<string, string> { ["group"] = "pc" } },
            Schedule = new PolicySchedule("0 * * * *"),
            Retention = new RetentionPolicy(KeepLast: 1),
            Concurrency = new PolicyConcurrency(1, 2),
        });

        var first = await WaitEndAsync(policy, await policy.RunNowAsync());
        await Task.Delay(1100);
        var second = await WaitEndAsync(policy, await policy.RunNowAsync());

        Assert.Equal(PolicyRunState.Partial, second.State);
        var raw = second.Targets.Single(t => t.Vm == "pc-raw");
        Assert.Equal(PolicyTargetStatus.Failed, raw.Status);
        Assert.Contains("raw", raw.Reason, StringComparison.OrdinalIgnoreCase);
        var good = second.Targets.Single(t => t.Vm == "pc-1");
        Assert.Equal(PolicyTargetStatus.Succeeded, good.Status);
        Assert.StartsWith("pol-hourly-cp-", good.Checkpoint, StringComparison.Ordinal);
        var checkpoints = await fixture.Grains.GetGrain<IVirtualMachineGrain>("kvm-03/pc-1").ListCheckpointsAsync();
        var kept = Assert.Single(checkpoints);
        Assert.Equal(good.Checkpoint, kept.Name);
        Assert.Equal(CheckpointOrigin.Policy, kept.Origin);
        Assert.NotEqual(first.Targets.Single(t => t.Vm == "pc-1").Checkpoint, kept.Name);
        Assert.NotNull((await policy.GetAsync()).NextRunAt);
    }

    [Fact]
    public async Task RunNow_PolicyGrainDeactivatedMidRun_NewActivationResumesWithoutStartingABackupTwice()
    {
        await AddVmAsync("kvm-01", "pr-1", "pr", size: 1024 * MiB);
        await AddVmAsync("kvm-02", "pr-2", "pr", size: 1024 * MiB);
        await AddVmAsync("kvm-03", "pr-3", "pr", size: 1024 * MiB);
        var policy = Policy("resumes");
        await policy.ApplyAsync(BackupPolicy("resumes", "pr", perHost: 1, fleet: 2, bandwidth: 128 * MiB));
        var run = await policy.RunNowAsync();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!run.Targets.Any(t => t.BackupRun is not null))
        {
            Assert.True(DateTime.UtcNow < deadline, "no backup was dispatched");
            run = await policy.WaitRunAsync(run.RunId, run.Version, TimeSpan.FromSeconds(5));
        }

        // The activation (and the task driving the run) goes away mid-run, as when its silo dies.
        Assert.False(run.IsTerminal);
        await fixture.Cluster.DeactivateAsync((Orleans.Runtime.IAddressable)policy);
        var final = await WaitEndAsync(policy, await policy.GetRunAsync(run.RunId));

        Assert.Equal(PolicyRunState.Completed, final.State);
        foreach (var target in final.Targets)
        {
            var backups = await fixture.Grains.GetGrain<IVirtualMachineGrain>(target.Key).ListBackupsAsync();
            var own = Assert.Single(backups, b => b.PolicyRun == run.RunId);
            Assert.Equal(BackupStep.Completed, own.Step);
            Assert.Equal(own.RunKey, target.BackupRun);
        }
    }

    [Fact]
    public async Task Delete_WhileARunIsInProgress_ConflictThenDeletedAfterIt()
    {
        await AddVmAsync("kvm-02", "pd-1", "pd", size: 256 * MiB);
        var policy = Policy("deletable");
        await policy.ApplyAsync(BackupPolicy("deletable", "pd", bandwidth: 128 * MiB));
        var run = await policy.RunNowAsync();

        var busy = await Assert.ThrowsAsync<OrchestratorException>(() => policy.DeleteAsync());
        var second = await Assert.ThrowsAsync<OrchestratorException>(() => policy.RunNowAsync());
        await WaitEndAsync(policy, run);

        Assert.Equal(ErrorCode.Conflict, busy.Code);
        Assert.Equal(ErrorCode.Conflict, second.Code);
        Assert.True(await policy.DeleteAsync());
        Assert.Equal(ErrorCode.NotFound, (await Assert.ThrowsAsync<OrchestratorException>(() => policy.GetAsync())).Code);
        Assert.DoesNotContain(await Fleet.ListPoliciesAsync(), p => p.Spec.Name == "deletable");
    }

    [Fact]
    public async Task Run_PartReportsLostWhileThePolicyGrainIsDown_RunStillFinishesThroughItsSync()
    {
        string[] vms = ["lost-1", "lost-2", "lost-3"];
        foreach (var vm in vms)
        {
            await AddVmAsync("kvm-01", vm, "lost-report");
        }

        await AddVmAsync("kvm-02", "lost-4", "lost-report");
        var policy = Policy("lost-report");
        await policy.ApplyAsync(BackupPolicy("lost-report", "lost-report", perHost: 1, fleet: 1));
        PolicyRunView run;
        try
        {
            // Every report of the parts (budget handed back, part ended) is lost: the policy grain learns it from its
            // own sync of the parts, and only then hands the freed budget on.
            PartReportFaults.Fail("lost-report");
            run = await WaitEndAsync(policy, await policy.RunNowAsync());
        }
        finally
        {
            PartReportFaults.Clear();
        }

        await policy.DeleteAsync();

        Assert.Equal(PolicyRunState.Completed, run.State);
        Assert.Equal(4, run.Targets.Count);
        Assert.All(run.Targets, t => Assert.Equal(PolicyTargetStatus.Succeeded, t.Status));
        Assert.Equal(1, RunRecordChecks.MaxOverlap(run.Targets));
    }

    [Fact]
    public async Task RunNow_OneHostWithMoreVms_GetsTheBudgetOtherHostsFreeAndTheFleetBudgetHolds()
    {
        for (var i = 1; i <= 6; i++)
        {
            await AddVmAsync("kvm-01", $"rb-{i}", "rb", size: 128 * MiB);
        }

        await AddVmAsync("kvm-02", "rb-7", "rb", size: 128 * MiB);
        await AddVmAsync("kvm-03", "rb-8", "rb", size: 128 * MiB);
        var policy = Policy("rebalance");
        await policy.ApplyAsync(BackupPolicy("rebalance", "rb", perHost: 3, fleet: 3, bandwidth: 128 * MiB));

        var run = await WaitEndAsync(policy, await policy.RunNowAsync(), TimeSpan.FromSeconds(90));

        // One slot per host at first; kvm-02 and kvm-03 end after one VM each and their slots go to kvm-01.
        Assert.Equal(PolicyRunState.Completed, run.State);
        Assert.Equal(8, run.Targets.Count);
        Assert.True(RunRecordChecks.MaxOverlap(run.Targets) <= 3, $"fleet budget exceeded: {RunRecordChecks.MaxOverlap(run.Targets)}");
        var big = RunRecordChecks.MaxOverlap(run.Targets.Where(t => t.Host == "kvm-01"));
        Assert.InRange(big, 2, 3);
        foreach (var target in run.Targets)
        {
            var own = await fixture.Grains.GetGrain<IVirtualMachineGrain>(target.Key).ListBackupsAsync();
            Assert.Single(own, b => b.PolicyRun == run.RunId);
        }
    }

    [Fact]
    public async Task RunNow_300VmsOnThreeHosts_StateWritesPerRunGrowWithHostsNotVms()
    {
        foreach (var host in ThreeHostClusterFixture_Hosts)
        {
            for (var i = 0; i < 100; i++)
            {
                fixture.Hypervisors[host].AddDomain($"w-{host}-{i:D3}", DomainPowerState.Running, [("vda", "qcow2", 4 * MiB)], new Dictionary<string, string> { ["group"] = "writes" });
            }

            await fixture.Grains.GetGrain<IHostGrain>(host).SyncInventoryAsync();
        }

        var policy = Policy("writes");
        await policy.ApplyAsync(BackupPolicy("writes", "writes", perHost: 20, fleet: 40));
        string[] states = ["policy", "policy-runs", "policy-host-run", "policy-host-runs"];
        static bool Mine(string key) => key == "writes" || key.EndsWith("/writes", StringComparison.Ordinal);
        var before = CountingGrainStorage.Count(states, Mine);
        var started = DateTime.UtcNow;

        var run = await WaitEndAsync(policy, await policy.RunNowAsync(), TimeSpan.FromSeconds(120));
        var seconds = (DateTime.UtcNow - started).TotalSeconds;
        var writes = CountingGrainStorage.Count(states, Mine) - before;
        output.WriteLine($"300 VMs on 3 hosts: {writes} state writes (policy + parts) in {seconds:F1} s");

        Assert.Equal(PolicyRunState.Completed, run.State);
        Assert.Equal(300, run.Targets.Count);
        Assert.True(RunRecordChecks.MaxOverlap(run.Targets) <= 40);
        Assert.All(ThreeHostClusterFixture_Hosts, h => Assert.True(RunRecordChecks.MaxOverlap(run.Targets.Where(t => t.Host == h)) <= 20));

        // Per part: its VMs once, the outcome once (history + clearing), one checkpoint per interval (3 s here) at
        // most; the policy grain: start, part hand-over, part ends, the end, and at most one grant change per part
        // checkpoint. Nothing per VM.
        var checkpoints = (int)Math.Ceiling(seconds / 3);
        var bound = (3 * (3 + checkpoints)) + (3 * checkpoints) + 10;
        Assert.True(writes <= bound, $"{writes} state writes for a run of 300 VMs in {seconds:F1} s (bound {bound})");
        // Under load the run (and so its checkpoints) lasts longer; what must never happen is a write per VM.
        Assert.True(writes < 300, $"{writes} state writes for a run of 300 VMs: one per VM or more");
    }

    [Fact]
    public async Task Activate_RunStoredBeforePerHostParts_ResumedInPartsWithoutStartingABackupTwiceAndOldRunsListed()
    {
        await AddVmAsync("kvm-01", "mg-1", "mg");
        await AddVmAsync("kvm-02", "mg-2", "mg", size: 256 * MiB);
        await AddVmAsync("kvm-03", "mg-3", "mg");
        const string Name = "migrated";
        var policy = Policy(Name);
        var spec = PolicySpecRecord.From(BackupPolicy(Name, "mg", perHost: 1, fleet: 2, bandwidth: 128 * MiB));
        var now = DateTimeOffset.UtcNow;
        const string RunId = "p-20261201-000000-0ld0ld";

        // The old run had dispatched mg-2's backup (the VM carries the run id) when its silo went away.
        var started = await fixture.Grains.GetGrain<IVirtualMachineGrain>("kvm-02/mg-2").StartBackupAsync(new BackupRequest
        {
            Target = Path.Combine(fixture.BackupRoot, Name, "kvm-02"),
            Policy = Name,
            PolicyVersion = 1,
            PolicyRun = RunId,
            BandwidthBytesPerSecond = 128 * MiB,
        });
        var old = new BackupPolicyState
        {
            Exists = true,
            Spec = spec,
            Version = 1,
            CreatedAt = now.AddDays(-1),
            UpdatedAt = now.AddDays(-1),
            ActiveRun = new PolicyRunRecord
            {
                RunId = RunId,
                PolicyVersion = 1,
                Spec = spec,
                Trigger = PolicyRunTrigger.Manual,
                State = PolicyRunState.Running,
                StartedAt = now.AddMinutes(-1),
                Version = 7,
                Targets =
                [
                    new PolicyTargetRecord { Host = "kvm-01", Vm = "mg-1", Status = PolicyTargetStatus.Succeeded, Reason = "done before", AdmittedAt = now.AddMinutes(-1), ReleasedAt = now.AddSeconds(-50), Attempts = 1 },
                    new PolicyTargetRecord { Host = "kvm-02", Vm = "mg-2", Status = PolicyTargetStatus.Running, AdmittedAt = now.AddSeconds(-1), Attempts = 1 },
                    new PolicyTargetRecord { Host = "kvm-03", Vm = "mg-3", Status = PolicyTargetStatus.Pending },
                ],
            },
        };
        var oldHistory = new PolicyRunHistoryState
        {
            Runs =
            [
                new PolicyRunRecord
                {
                    RunId = "p-20261130-000000-0ld000",
                    PolicyVersion = 1,
                    Spec = spec,
                    State = PolicyRunState.Completed,
                    StartedAt = now.AddDays(-1),
                    EndedAt = now.AddDays(-1).AddMinutes(1),
                    Version = 9,
                    Targets = [new PolicyTargetRecord { Host = "kvm-01", Vm = "mg-1", Status = PolicyTargetStatus.Succeeded, Reason = "old" }],
                },
            ],
        };
        var storage = fixture.Cluster.Silos[0].SiloHost.Services.GetRequiredKeyedService<Orleans.Storage.IGrainStorage>(Grains.StorageNames.Default);
        var id = policy.GetGrainId();
        await storage.WriteStateAsync("policy", id, new Orleans.GrainState<BackupPolicyState>(old));
        await storage.WriteStateAsync("policy-runs", id, new Orleans.GrainState<PolicyRunHistoryState>(oldHistory));

        var run = await WaitEndAsync(policy, await policy.GetRunAsync(RunId));

        Assert.Equal(PolicyRunState.Completed, run.State);
        Assert.Equal(["kvm-01/mg-1", "kvm-02/mg-2", "kvm-03/mg-3"], run.Targets.Select(t => t.Key).Order(StringComparer.Ordinal));
        Assert.Equal("done before", run.Targets.Single(t => t.Vm == "mg-1").Reason);
        Assert.Equal(started.RunKey, run.Targets.Single(t => t.Vm == "mg-2").BackupRun);
        foreach (var key in new[] { "kvm-02/mg-2", "kvm-03/mg-3" })
        {
            var own = Assert.Single(await fixture.Grains.GetGrain<IVirtualMachineGrain>(key).ListBackupsAsync(), b => b.PolicyRun == RunId);
            Assert.Equal(BackupStep.Completed, own.Step);
        }

        var runs = await policy.ListRunsAsync();
        Assert.Equal([RunId, "p-20261130-000000-0ld000"], runs.Select(r => r.RunId));
        Assert.Equal("old", Assert.Single(runs[1].Targets).Reason);
        Assert.Equal(RunId, (await policy.GetAsync()).LastRun?.RunId);
    }

    private static readonly string[] ThreeHostClusterFixture_Hosts = Cluster.ThreeHostClusterFixture.Hosts;

    private async Task SyncWhenPlacedAsync(string host)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            try
            {
                await fixture.Grains.GetGrain<IHostGrain>(host).SyncInventoryAsync();
                return;
            }
            catch (OrchestratorException e) when (e.Code == ErrorCode.HostUnavailable && DateTime.UtcNow < deadline)
            {
                await Task.Delay(100);
            }
        }
    }
}
