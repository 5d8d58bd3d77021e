using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Simulated;
using Orchestrator.UnitTests.Cluster;

namespace Orchestrator.UnitTests.TestRestores;

/// <summary>Test restores in the VM grain against the simulated hypervisor: pass, fail, always clean up, refuse bad input.</summary>
[Collection(ThreeHostClusterCollection.Name)]
public sealed class TestRestoreGrainTests(ThreeHostClusterFixture fixture)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);

    private async Task<(IVirtualMachineGrain Vm, SimulatedHypervisor Hypervisor, BackupRunView Run)> BackedUpVmAsync(string host, string name)
    {
        var hypervisor = fixture.Hypervisors[host];
        hypervisor.AddDomain(name, DomainPowerState.Running, [("vda", "qcow2", 64L << 20)]);
        await fixture.Grains.GetGrain<IHostGrain>(host).SyncInventoryAsync();
        var vm = fixture.Grains.GetGrain<IVirtualMachineGrain>($"{host}/{name}");
        var run = await vm.StartBackupAsync(new BackupRequest());
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!run.IsTerminal)
        {
            Assert.True(DateTime.UtcNow < deadline, $"backup stuck at {run.Step}");
            run = await vm.WaitBackupAsync(run.RunKey.Split('/')[^1], run.Version, TimeSpan.FromSeconds(5));
        }

        Assert.Equal(BackupStep.Completed, run.Step);
        return (vm, hypervisor, run);
    }

    private static async Task<TestRestoreView> WaitTestAsync(IVirtualMachineGrain vm, TestRestoreView test)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!test.IsTerminal)
        {
            Assert.True(DateTime.UtcNow < deadline, "test restore did not end");
            await Task.Delay(50);
            test = await vm.GetTestRestoreAsync(test.Id);
        }

        return test;
    }

    private static async Task AssertGoneAsync(SimulatedHypervisor hypervisor, TestRestoreView test, BackupRunView run)
    {
        Assert.True(test.CleanedUp, test.Reason);
        Assert.DoesNotContain(await hypervisor.ListDomainsAsync(), d => d.Name.StartsWith("orch-test-", StringComparison.Ordinal));
        foreach (var disk in run.Disks)
        {
            var image = Path.Combine(Path.GetDirectoryName(disk.BasePath)!, $"{test.Domain}-{disk.Target}.qcow2");
            Assert.False(await hypervisor.Images.ExistsAsync(image), image);
        }
    }

    [Fact]
    public async Task TestRestore_GoodSet_PassesRecordsTheProvenRestoreAndLeavesNothing()
    {
        var (vm, hypervisor, run) = await BackedUpVmAsync("kvm-01", "tr-ok");

        var test = await WaitTestAsync(vm, await vm.StartTestRestoreAsync(new TestRestoreRequest(run.RunKey, TestProbe.Agent, Timeout)));

        Assert.Equal(TestRestoreOutcome.Passed, test.Outcome);
        Assert.Equal($"orch-test-tr-ok-{run.RunKey.Split('/')[^1]}", test.Domain);
        Assert.Equal(run.RunKey, test.RunKey);
        await AssertGoneAsync(hypervisor, test, run);
        var view = await vm.GetAsync();
        Assert.Equal(test.Id, view.LastProvenRestore?.Id);
        Assert.Equal(test.Id, view.LastTestRestore?.Id);
        Assert.Equal(test.Id, (await vm.GetBackupAsync(run.RunKey.Split('/')[^1])).LastTest?.Id);

        // The original VM was not touched.
        Assert.Equal(DomainPowerState.Running, (await hypervisor.GetDomainAsync("tr-ok")).State);
    }

    [Fact]
    public async Task TestRestore_FlippedBytesInTheSet_FailsOnTheManifestChecksumAndDeletesTheImage()
    {
        var (vm, hypervisor, run) = await BackedUpVmAsync("kvm-02", "tr-corrupt");
        hypervisor.CorruptImage(run.Disks[0].BackupPath);

        var test = await WaitTestAsync(vm, await vm.StartTestRestoreAsync(new TestRestoreRequest(run.RunKey, TestProbe.Agent, Timeout)));

        Assert.Equal(TestRestoreOutcome.Failed, test.Outcome);
        Assert.Contains("checksum", test.Reason, StringComparison.Ordinal);
        await AssertGoneAsync(hypervisor, test, run);
        Assert.Null((await vm.GetAsync()).LastProvenRestore);
    }

    [Fact]
    public async Task TestRestore_ProbeFails_FailsWithTheReasonAndDestroysTheBootedVm()
    {
        var (vm, hypervisor, run) = await BackedUpVmAsync("kvm-03", "tr-probe");

        var test = await WaitTestAsync(vm, await vm.StartTestRestoreAsync(new TestRestoreRequest(run.RunKey, TestProbe.Parse("command:exit 3"), Timeout)));

        Assert.Equal(TestRestoreOutcome.Failed, test.Outcome);
        Assert.Contains("exited 3", test.Reason, StringComparison.Ordinal);
        await AssertGoneAsync(hypervisor, test, run);
    }

    [Fact]
    public async Task TestRestore_AgentAnswersWithAnError_FailsAndCleansUp()
    {
        var (vm, hypervisor, run) = await BackedUpVmAsync("kvm-01", "tr-start");
        hypervisor.InjectFault(SimulatedOperation.GuestAgent, new HypervisorException(HypervisorErrorKind.OperationFailed, "agent said no"));

        var test = await WaitTestAsync(vm, await vm.StartTestRestoreAsync(new TestRestoreRequest(run.RunKey, TestProbe.Agent, Timeout)));

        Assert.Equal(TestRestoreOutcome.Failed, test.Outcome);
        Assert.Contains("agent said no", test.Reason, StringComparison.Ordinal);
        await AssertGoneAsync(hypervisor, test, run);
    }

    [Fact]
    public async Task TestRestore_ConsoleNeverMatches_TimesOutAndCleansUp()
    {
        var (vm, hypervisor, run) = await BackedUpVmAsync("kvm-02", "tr-timeout");

        var test = await WaitTestAsync(vm, await vm.StartTestRestoreAsync(new TestRestoreRequest(run.RunKey, TestProbe.Parse("console:never printed"), TimeSpan.FromSeconds(5))));

        Assert.Equal(TestRestoreOutcome.Failed, test.Outcome);
        Assert.Contains("timed out after 5 s in probe", test.Reason, StringComparison.Ordinal);
        await AssertGoneAsync(hypervisor, test, run);
    }

    [Fact]
    public async Task StartTestRestore_BadInput_InvalidArgumentNamingTheField()
    {
        var (vm, _, run) = await BackedUpVmAsync("kvm-03", "tr-bad");

        Assert.Equal("timeout", (await Assert.ThrowsAsync<OrchestratorException>(() => vm.StartTestRestoreAsync(new TestRestoreRequest(run.RunKey, TestProbe.Agent, TimeSpan.FromSeconds(1))))).Field);
        Assert.Equal("probe", (await Assert.ThrowsAsync<OrchestratorException>(() => vm.StartTestRestoreAsync(new TestRestoreRequest(run.RunKey, new TestProbe(TestProbeKind.Console, "("), Timeout)))).Field);
        Assert.Equal("host", (await Assert.ThrowsAsync<OrchestratorException>(() => vm.StartTestRestoreAsync(new TestRestoreRequest(run.RunKey, TestProbe.Agent, Timeout, Host: "kvm/01")))).Field);
        var dead = await Assert.ThrowsAsync<OrchestratorException>(() => vm.StartTestRestoreAsync(new TestRestoreRequest(run.RunKey, TestProbe.Agent, Timeout, Host: "kvm-99")));
        Assert.Equal((ErrorCode.HostUnavailable, "kvm-99"), (dead.Code, dead.Host));
        Assert.Null((await vm.GetAsync()).LastTestRestore); // refused: no test is left behind
        Assert.Equal("run", (await Assert.ThrowsAsync<OrchestratorException>(() => vm.StartTestRestoreAsync(new TestRestoreRequest("kvm-03/other/20260101T000000Z", TestProbe.Agent, Timeout)))).Field);
    }

    [Fact]
    public async Task TestRestoreIfDue_EveryTwoRuns_TestsTheFirstRunThenEverySecond()
    {
        var (vm, _, run) = await BackedUpVmAsync("kvm-01", "tr-due");
        var spec = new TestRestoreSpec(2, null, TestProbe.Agent, Timeout: Timeout);

        var first = await vm.TestRestoreIfDueAsync(run.RunKey, spec, "nightly");
        Assert.NotNull(first);
        Assert.Equal("nightly", first.Policy);
        await WaitTestAsync(vm, first);

        // No backup completed since that test: not due.
        Assert.Null(await vm.TestRestoreIfDueAsync(run.RunKey, spec, "nightly"));
    }
}
