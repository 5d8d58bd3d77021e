namespace Orchestrator.UnitTests.Policies;

/// <summary>A run's per-host part loses its silo mid-run (its own cluster: the test kills a silo).</summary>
public sealed class PolicyPartLossTests : IAsyncLifetime
{
    private const long MiB = 1L << 20;
    private readonly PolicyClusterFixture _fixture = new();

    public Task InitializeAsync() => _fixture.InitializeAsync();

    public Task DisposeAsync() => _fixture.DisposeAsync();

    [Fact]
    public async Task RunNow_PartSiloKilledMidRun_RunFinishesWithinBudgetsAndTheLostHostsVmsWaitForIt()
    {
        var late = PolicyClusterFixture.LateHost;
        var silo = await _fixture.Cluster.StartAdditionalSiloAsync();
        for (var i = 1; i <= 3; i++)
        {
            _fixture.Hypervisors[late].AddDomain($"pl-9{i}", Hypervisor.DomainPowerState.Running, [("vda", "qcow2", 512 * MiB)], new Dictionary<string, string> { ["group"] = "pl" });
        }

        await SyncWhenPlacedAsync(late);
        foreach (var (host, vm) in new[] { ("kvm-01", "pl-11"), ("kvm-01", "pl-12"), ("kvm-02", "pl-21"), ("kvm-03", "pl-31") })
        {
            _fixture.Hypervisors[host].AddDomain(vm, Hypervisor.DomainPowerState.Running, [("vda", "qcow2", 256 * MiB)], new Dictionary<string, string> { ["group"] = "pl" });
            await _fixture.Grains.GetGrain<IHostGrain>(host).SyncInventoryAsync();
        }

        var policy = _fixture.Grains.GetGrain<IBackupPolicyGrain>("part-loss");
        await policy.ApplyAsync(new PolicySpec
        {
            Name = "part-loss",
            Kind = PolicyKind.LiveBackup,
            Selector = new PolicySelector { Labels = new Dictionary<string, string> { ["group"] = "pl" } },
            Retention = new RetentionPolicy(KeepLast: 3),
            Target = Path.Combine(_fixture.BackupRoot, "{policy}", "{host}"),
            BandwidthBytesPerSecond = 64 * MiB,
            Concurrency = new PolicyConcurrency(PerHost: 2, Fleet: 3),
        });
        var run = await policy.RunNowAsync();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!run.Targets.Any(t => t.Host == late && t.BackupRun is not null))
        {
            Assert.True(DateTime.UtcNow < deadline, "no backup was dispatched on the late host");
            run = await policy.WaitRunAsync(run.RunId, run.Version, TimeSpan.FromSeconds(5));
        }

        // The late host's silo dies with the part driving its VMs (the part lives there).
        Assert.False(run.IsTerminal);
        await _fixture.Cluster.KillSiloAsync(silo);
        deadline = DateTime.UtcNow + TimeSpan.FromSeconds(120);
        while (!run.IsTerminal)
        {
            Assert.True(DateTime.UtcNow < deadline, $"run still running: {string.Join(", ", run.Targets.Select(t => $"{t.Key}={t.Status}"))}");
            try
            {
                run = await policy.WaitRunAsync(run.RunId, run.Version, TimeSpan.FromSeconds(5));
            }
            catch (Exception e) when (e is not Xunit.Sdk.XunitException)
            {
                // The client's gateway may have been the killed silo.
                await Task.Delay(500);
            }
        }

        Assert.Equal(PolicyRunState.Partial, run.State);
        Assert.Equal(7, run.Targets.Count);
        Assert.All(run.Targets.Where(t => t.Host == late), t => Assert.Equal(PolicyTargetStatus.Skipped, t.Status));
        Assert.All(run.Targets.Where(t => t.Host != late), t => Assert.Equal(PolicyTargetStatus.Succeeded, t.Status));
        Assert.True(RunRecordChecks.MaxOverlap(run.Targets) <= 3, $"fleet budget exceeded: {RunRecordChecks.MaxOverlap(run.Targets)}");
        Assert.All(run.Targets.GroupBy(t => t.Host), g => Assert.True(RunRecordChecks.MaxOverlap(g) <= 2));
        foreach (var target in run.Targets.Where(t => t.Host != late))
        {
            var own = await _fixture.Grains.GetGrain<IVirtualMachineGrain>(target.Key).ListBackupsAsync();
            Assert.Single(own, b => b.PolicyRun == run.RunId);
        }

        Assert.Equal(run.Targets.Where(t => t.Host == late).Select(t => t.Key).Order(StringComparer.Ordinal), (await policy.GetAsync()).PendingRetries.Order(StringComparer.Ordinal));
    }

    private async Task SyncWhenPlacedAsync(string host)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            try
            {
                await _fixture.Grains.GetGrain<IHostGrain>(host).SyncInventoryAsync();
                return;
            }
            catch (OrchestratorException e) when (e.Code == ErrorCode.HostUnavailable && DateTime.UtcNow < deadline)
            {
                await Task.Delay(100);
            }
        }
    }
}
