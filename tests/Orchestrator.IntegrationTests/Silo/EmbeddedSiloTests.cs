using Google.Rpc;
using Grpc.Core;
using Orchestrator.Api.V1;
using Orchestrator.IntegrationTests.Infrastructure;

namespace Orchestrator.IntegrationTests.Silo;

/// <summary>One embedded-mode silo process (SQLite, simulated demo host) shared by read-only tests.</summary>
public sealed class EmbeddedSiloFixture : IAsyncLifetime
{
    public SiloProcess Silo { get; } = new("demo-01", Path.Combine(Path.GetTempPath(), $"orchestrator-embedded-{Guid.NewGuid():N}"));

    public FleetService.FleetServiceClient Fleet => GrpcClients.Fleet(Silo.GrpcEndpoint);

    public async Task InitializeAsync()
    {
        Silo.Start();
        await Silo.WaitReadyAsync();
        await Fleet.WaitForVmAsync("demo-01/web-1");
    }

    public async Task DisposeAsync()
    {
        await Silo.DisposeAsync();
        Directory.Delete(Silo.WorkDir, recursive: true);
    }
}

public sealed class EmbeddedSiloTests(EmbeddedSiloFixture fixture) : IClassFixture<EmbeddedSiloFixture>
{
    [Fact]
    public async Task ListHosts_ShowsTheLocalHostOnline()
    {
        var hosts = (await fixture.Fleet.ListHostsAsync(new ListHostsRequest())).Hosts;
        var host = Assert.Single(hosts);
        Assert.Equal("demo-01", host.Name);
        Assert.True(host.Online);
        Assert.Equal("simulated://demo-01", host.Uri);
        Assert.Equal(5, host.VmCount);
    }

    [Fact]
    public async Task GetVm_ReturnsDisksChainsAndLabels()
    {
        var vm = (await fixture.Fleet.GetVmAsync(new GetVmRequest { Key = "demo-01/web-1" })).Vm;
        Assert.Equal(PowerState.Running, vm.PowerState);
        Assert.Equal(["vda", "vdb"], vm.Disks.Select(d => d.Target));
        Assert.Equal(["qcow2", "raw"], vm.Disks.Select(d => d.Format));
        Assert.Equal("web", vm.Labels["tier"]);
        var chain = (await fixture.Fleet.GetDiskChainAsync(new GetDiskChainRequest { Key = "demo-01/web-1/vdb" })).Chain;
        Assert.Equal(vm.Disks[1].SourcePath, Assert.Single(chain.Layers).Path);
    }

    [Fact]
    public async Task GetVm_MalformedKey_InvalidArgumentNamingTheField()
    {
        var e = await Assert.ThrowsAsync<RpcException>(async () => await fixture.Fleet.GetVmAsync(new GetVmRequest { Key = "demo-01" }));
        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        var status = e.GetRpcStatus()!;
        var bad = status.GetDetail<BadRequest>();
        Assert.Equal("key", Assert.Single(bad.FieldViolations).Field);
        Assert.Contains("HOST/VM", e.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task GetVm_UnknownVm_NotFound()
    {
        var e = await Assert.ThrowsAsync<RpcException>(async () => await fixture.Fleet.GetVmAsync(new GetVmRequest { Key = "demo-01/ghost" }));
        Assert.Equal(StatusCode.NotFound, e.StatusCode);
        Assert.Equal("NOT_FOUND", e.GetRpcStatus()!.GetDetail<ErrorInfo>().Reason);
    }

    [Fact]
    public async Task GetVm_UnknownHost_UnavailableWithHostInDetails()
    {
        var e = await Assert.ThrowsAsync<RpcException>(async () => await fixture.Fleet.GetVmAsync(new GetVmRequest { Key = "kvm-77/web-1" }));
        Assert.Equal(StatusCode.Unavailable, e.StatusCode);
        var info = e.GetRpcStatus()!.GetDetail<ErrorInfo>();
        Assert.Equal("HOST_UNAVAILABLE", info.Reason);
        Assert.Equal("kvm-77", info.Metadata["host"]);
    }

    [Fact]
    public async Task Health_LiveAndReady()
    {
        using var http = new HttpClient();
        Assert.Equal("Healthy", await http.GetStringAsync($"http://127.0.0.1:{fixture.Silo.HttpPort}/health/live"));
        Assert.Equal("Healthy", await http.GetStringAsync($"http://127.0.0.1:{fixture.Silo.HttpPort}/health/ready"));
    }
}
