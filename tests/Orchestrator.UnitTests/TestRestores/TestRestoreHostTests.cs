using Orchestrator.Grains.Backups;
using Orchestrator.Grains.VirtualMachines;
using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Simulated;
using Orchestrator.UnitTests.Cluster;

namespace Orchestrator.UnitTests.TestRestores;

/// <summary>
/// Test restores on any host (simulated, three hosts): the test host's grain owns the throwaway VM; the host is the
/// one asked for or one chosen by capacity; a test cut short (its silo stopped) is cleaned up and recorded failed.
/// </summary>
[Collection(ThreeHostClusterCollection.Name)]
public sealed class TestRestoreHostTests(ThreeHostClusterFixture fixture)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);
    private const long GiB = 1L << 30;

    private async Task<(IVirtualMachineGrain Vm, BackupRunView Run)> BackedUpVmAsync(string host, string name)
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

        // The backup root is a mount every host shares.
        foreach (var other in ThreeHostClusterFixture.Hosts.Where(h => h != host))
        {
            foreach (var disk in run.Disks)
            {
                hypervisor.ShareImageWith(fixture.Hypervisors[other], disk.BackupPath);
            }
        }

        return (vm, run);
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

    private async Task AssertNothingLeftAsync(string host)
    {
        Assert.DoesNotContain(await fixture.Hypervisors[host].ListDomainsAsync(), d => d.Name.StartsWith("orch-test-", StringComparison.Ordinal));
        Assert.Empty(Directory.GetFiles(fixture.RestoreRoot(host), "orch-test-*"));
    }

    [Fact]
    public async Task TestRestore_OnAnotherHost_RestoredBootedAndRemovedThereRecordedWithTheVm()
    {
        var (vm, run) = await BackedUpVmAsync("kvm-01", "th-other");

        var test = await WaitTestAsync(vm, await vm.StartTestRestoreAsync(new TestRestoreRequest(run.RunKey, TestProbe.Agent, Timeout, Host: "kvm-02")));

        Assert.True(test.Outcome == TestRestoreOutcome.Passed, test.Reason);
        Assert.Equal("kvm-02", test.Host);
        Assert.True(test.CleanedUp);
        await AssertNothingLeftAsync("kvm-02");
        Assert.DoesNotContain(await fixture.Hypervisors["kvm-01"].ListDomainsAsync(), d => d.Name == test.Domain);
        var view = await vm.GetAsync();
        Assert.Equal((test.Id, "kvm-02"), (view.LastProvenRestore?.Id, view.LastProvenRestore?.Host));

        // Recorded by the VM, so forgotten by the host (right after the VM recorded it).
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (await fixture.Grains.GetGrain<ITestRestoreHostGrain>("kvm-02").GetAsync(test.Id) is not null)
        {
            Assert.True(DateTime.UtcNow < deadline, "the host kept the recorded test");
            await Task.Delay(50);
        }
    }

    [Fact]
    public async Task TestRestore_NoHostGivenOwnHostOutOfMemory_RunsOnAHostWithCapacity()
    {
        var (vm, run) = await BackedUpVmAsync("kvm-02", "th-full");
        var own = fixture.Hypervisors["kvm-02"];
        own.SetCapacity(3 * GiB / 1024, 64); // 3 GiB: the running VMs' 2 GiB each leave nothing for a throwaway
        try
        {
            var offer = await fixture.Grains.GetGrain<ITestRestoreHostGrain>("kvm-02").OfferAsync(run.RunKey);
            Assert.False(offer.Qualifies);
            Assert.Contains("MiB free", offer.Refusal, StringComparison.Ordinal);

            var test = await WaitTestAsync(vm, await vm.StartTestRestoreAsync(new TestRestoreRequest(run.RunKey, TestProbe.Agent, Timeout)));

            Assert.True(test.Outcome == TestRestoreOutcome.Passed, test.Reason);
            Assert.NotEqual("kvm-02", test.Host);
            await AssertNothingLeftAsync(test.Host);
        }
        finally
        {
            own.SetCapacity(own.Options.MemoryKiB, own.Options.Cpus);
        }
    }

    [Fact]
    public async Task TestRestore_NoHostQualifies_FailedPreconditionNamingEachHostAndWhy()
    {
        var (vm, run) = await BackedUpVmAsync("kvm-03", "th-none");
        fixture.Hypervisors["kvm-01"].SetCapacity(1 * GiB / 1024, 64);
        fixture.Hypervisors["kvm-02"].SetCapacity(256 * GiB / 1024, 0); // no CPU at all
        fixture.Hypervisors["kvm-03"].SetCapacity(1 * GiB / 1024, 64);
        try
        {
            var e = await Assert.ThrowsAsync<OrchestratorException>(() => vm.StartTestRestoreAsync(new TestRestoreRequest(run.RunKey, TestProbe.Agent, Timeout)));

            Assert.Equal((ErrorCode.FailedPrecondition, "host", "NO_TEST_HOST"), (e.Code, e.Field, e.Reason));
            Assert.Contains("kvm-01: ", e.Message, StringComparison.Ordinal);
            Assert.Contains("kvm-03: ", e.Message, StringComparison.Ordinal);
            Assert.Contains("MiB free", e.Message, StringComparison.Ordinal);
            Assert.Contains("kvm-02: ", e.Message, StringComparison.Ordinal);
            Assert.Contains("vCPUs running on 0 CPUs", e.Message, StringComparison.Ordinal);
            Assert.Null((await vm.GetAsync()).LastTestRestore);
        }
        finally
        {
            foreach (var h in ThreeHostClusterFixture.Hosts)
            {
                fixture.Hypervisors[h].SetCapacity(fixture.Hypervisors[h].Options.MemoryKiB, fixture.Hypervisors[h].Options.Cpus);
            }
        }
    }

    [Fact]
    public async Task Offer_NoSetOfThatRunUnderTheHostsRoots_RefusedSayingSo()
    {
        var offer = await fixture.Grains.GetGrain<ITestRestoreHostGrain>("kvm-03").OfferAsync("kvm-01/web-1/b-20200101-000000-abcdef");

        Assert.False(offer.Qualifies);
        Assert.Contains("the backup set is not usable under its backup roots", offer.Refusal, StringComparison.Ordinal);
    }

    [Fact]
    public async Task TestLeftRunningByAStoppedSilo_DomainDestroyedFilesDeletedRecordedFailedInterrupted()
    {
        // What a test restore leaves when its silo dies while the throwaway boots: its intent, a running domain, files.
        var hypervisor = fixture.Hypervisors["kvm-03"];
        var domain = "orch-test-th-crash-b-20261207-000000-abcdef";
        hypervisor.AddDomain(domain, DomainPowerState.Running, [("vda", "qcow2", 64L << 20)], imageDir: fixture.RestoreRoot("kvm-03"));
        var image = Path.Combine(fixture.RestoreRoot("kvm-03"), $"{domain}-vda.qcow2");
        var console = Path.Combine(fixture.RestoreRoot("kvm-03"), $"{domain}-console.log");
        await File.WriteAllTextAsync(console, "booting");
        var record = new TestRestoreRecord
        {
            Id = $"test-crash-{Guid.NewGuid():N}",
            RunId = "b-20261207-000000-abcdef",
            Domain = domain,
            Files = [image, console],
            StartedAt = DateTimeOffset.UtcNow,
            Outcome = TestRestoreOutcome.Running,
        };

        var ended = await fixture.Grains.GetGrain<ITestRestoreHostGrain>("kvm-03").AdoptAsync("kvm-01/th-crash", record);

        Assert.Equal(TestRestoreOutcome.Failed, ended.Outcome);
        Assert.StartsWith("interrupted", ended.Reason, StringComparison.Ordinal);
        Assert.True(ended.CleanedUp, ended.Reason);
        Assert.DoesNotContain(await hypervisor.ListDomainsAsync(), d => d.Name == domain);
        Assert.False(await hypervisor.Images.ExistsAsync(image));
        Assert.False(File.Exists(console));
    }

    [Fact]
    public void Best_TiesGoToTheOwnHostFewerRunningTestsFirstNoneQualifyingNull()
    {
        static TestHostOffer Offer(string host, long freeGiB, int active, string? refusal = null) =>
            new(host, freeGiB * GiB / 1024, GiB / 1024, 8, 2, 1, active, 2, refusal);

        Assert.Equal("kvm-02", TestHostChoice.Best([Offer("kvm-01", 64, 0), Offer("kvm-02", 8, 0)], "kvm-02")?.Host);
        Assert.Equal("kvm-01", TestHostChoice.Best([Offer("kvm-01", 8, 0), Offer("kvm-02", 64, 1)], "kvm-02")?.Host);
        Assert.Equal("kvm-03", TestHostChoice.Best([Offer("kvm-01", 8, 0), Offer("kvm-03", 16, 0)], "kvm-02")?.Host);
        Assert.Null(TestHostChoice.Best([Offer("kvm-01", 8, 0, "full")], "kvm-01"));
    }

    [Theory]
    [InlineData("<domain><memory unit='KiB'>131072</memory><vcpu>2</vcpu></domain>", 131072, 2)]
    [InlineData("<domain><memory unit='GiB'>2</memory><currentMemory unit='MiB'>512</currentMemory></domain>", 524288, 1)]
    [InlineData("<domain><memory>1024</memory><vcpu placement='static'>4</vcpu></domain>", 1024, 4)]
    public void ThrowawaySize_FromTheSetsDomainXml(string xml, long kib, int vcpus)
    {
        Assert.Equal((kib, vcpus), TestRestoreHostGrain.ThrowawaySize(xml));
    }
}
