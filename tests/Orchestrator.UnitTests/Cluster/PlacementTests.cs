using Orleans.TestingHost;

namespace Orchestrator.UnitTests.Cluster;

[Collection(ThreeHostClusterCollection.Name)]
public sealed class PlacementTests(ThreeHostClusterFixture fixture)
{
    private IManagementGrain Management => fixture.Grains.GetGrain<IManagementGrain>(0);

    [Theory]
    [InlineData("kvm-01")]
    [InlineData("kvm-02")]
    [InlineData("kvm-03")]
    public async Task HostVmAndDiskGrains_ActivateOnTheirHostsSilo(string host)
    {
        var n = host[^1];
        var expected = fixture.SiloOf(host).SiloAddress;
        var hostGrain = fixture.Grains.GetGrain<IHostGrain>(host);
        var vmGrain = fixture.Grains.GetGrain<IVirtualMachineGrain>($"{host}/web-{n}");
        var diskGrain = fixture.Grains.GetGrain<IDiskChainGrain>($"{host}/web-{n}/vdb");

        // Touch each so it is activated, then ask the cluster where it lives.
        await hostGrain.GetAsync();
        await vmGrain.GetAsync();
        await diskGrain.GetAsync();

        Assert.Equal(expected, await Management.GetActivationAddress(hostGrain));
        Assert.Equal(expected, await Management.GetActivationAddress(vmGrain));
        Assert.Equal(expected, await Management.GetActivationAddress(diskGrain));
    }

    [Fact]
    public async Task SyncInventory_ReadsTheLocalHypervisorOnly()
    {
        foreach (var host in ThreeHostClusterFixture.Hosts)
        {
            var view = await fixture.Grains.GetGrain<IHostGrain>(host).SyncInventoryAsync();
            var vms = await fixture.Grains.GetGrain<IHostGrain>(host).ListVmsAsync();
            Assert.Equal(fixture.SiloOf(host).SiloAddress.ToParsableString(), view.Silo);
            Assert.Equal($"simulated://{host}", view.Uri);
            Assert.All(vms, vm => Assert.Equal(host, vm.Host));
            // Exactly this host's hypervisor's domains (other tests of the fixture define more VMs on some hosts).
            var local = (await fixture.Hypervisors[host].ListDomainsAsync()).Select(d => d.Name).Where(n => !n.StartsWith(TestRestoreRequest.ThrowawayPrefix, StringComparison.Ordinal));
            Assert.Equal(local.Order(StringComparer.Ordinal), vms.Select(v => v.Name).Order(StringComparer.Ordinal));
            Assert.Contains($"db-{host[^1]}", vms.Select(v => v.Name));
            Assert.Contains($"web-{host[^1]}", vms.Select(v => v.Name));
        }
    }

    [Theory]
    [InlineData("kvm-99")]
    [InlineData("kvm-99/web-1")]
    [InlineData("kvm-99/web-1/vda")]
    public async Task UnknownHost_FailsFastWithHostUnavailable(string key)
    {
        var started = DateTime.UtcNow;
        var e = await Assert.ThrowsAsync<OrchestratorException>(() => key.Count(c => c == '/') switch
        {
            0 => fixture.Grains.GetGrain<IHostGrain>(key).GetAsync(),
            1 => fixture.Grains.GetGrain<IVirtualMachineGrain>(key).GetAsync(),
            _ => fixture.Grains.GetGrain<IDiskChainGrain>(key).GetAsync(),
        });
        Assert.Equal(ErrorCode.HostUnavailable, e.Code);
        Assert.Equal("kvm-99", e.Host);
        Assert.Contains("host unavailable", e.Message, StringComparison.Ordinal);
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(5), "the call must fail fast");
    }

    [Fact]
    public async Task UnknownVm_IsNotFound()
    {
        var e = await Assert.ThrowsAsync<OrchestratorException>(() => fixture.Grains.GetGrain<IVirtualMachineGrain>("kvm-01/nope").GetAsync());
        Assert.Equal(ErrorCode.NotFound, e.Code);
        Assert.Contains("kvm-01/nope", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DiskChain_ReflectsTheHypervisorsChain()
    {
        var chain = await fixture.Grains.GetGrain<IDiskChainGrain>("kvm-02/web-2/vda").GetAsync();
        var layer = Assert.Single(chain.Layers);
        Assert.Equal("qcow2", layer.Format);
        Assert.EndsWith("web-2-vda.qcow2", layer.Path, StringComparison.Ordinal);
    }
}

/// <summary>Stops a host's silo: that host's grains must fail with "host unavailable", never move.</summary>
public sealed class DeadHostTests : IAsyncLifetime
{
    private readonly ThreeHostClusterFixture _fixture = new();

    public Task InitializeAsync() => _fixture.InitializeAsync();

    public Task DisposeAsync() => _fixture.DisposeAsync();

    [Fact]
    public async Task HostSiloStopped_ItsGrainsFailWithHostUnavailable_AndOthersStillWork()
    {
        var vm = _fixture.Grains.GetGrain<IVirtualMachineGrain>("kvm-03/web-3");
        Assert.Equal("web-3", (await vm.GetAsync()).Name);

        await _fixture.Cluster.StopSiloAsync(_fixture.SiloOf("kvm-03"));
        await _fixture.Cluster.WaitForLivenessToStabilizeAsync();

        var e = await Assert.ThrowsAsync<OrchestratorException>(() => vm.GetAsync());
        Assert.Equal(ErrorCode.HostUnavailable, e.Code);
        Assert.Equal("kvm-03", e.Host);

        // The other hosts are unaffected.
        Assert.Equal("web-1", (await _fixture.Grains.GetGrain<IVirtualMachineGrain>("kvm-01/web-1").GetAsync()).Name);
    }
}
