using System.Text.Json;
using Orchestrator.IntegrationTests.Infrastructure;

namespace Orchestrator.IntegrationTests.Silo;

/// <summary>The real `orchestrator` binary against a real silo process, JSON parsed as a script would.</summary>
public sealed class CliEndToEndTests(EmbeddedSiloFixture fixture) : IClassFixture<EmbeddedSiloFixture>
{
    private Task<ProcessResult> CliAsync(params string[] args) =>
        ProcessRunner.RunAsync("dotnet", [Repo.CliDll, .. args, "--endpoint", fixture.Silo.GrpcEndpoint]);

    [Fact]
    public async Task VmListJson_ListsEveryDemoVmWithItsDisks()
    {
        var result = await CliAsync("vm", "list", "--format", "json");
        Assert.True(result.ExitCode == 0, ProcessRunner.Describe(result));
        using var json = JsonDocument.Parse(result.StandardOutput);
        var vms = json.RootElement.EnumerateArray().ToList();
        Assert.Equal(["demo-01/build-1", "demo-01/db-1", "demo-01/legacy-1", "demo-01/web-1", "demo-01/web-2"], vms.Select(v => v.GetProperty("key").GetString()));
        var web1 = vms.Single(v => v.GetProperty("name").GetString() == "web-1");
        Assert.Equal("running", web1.GetProperty("power_state").GetString());
        Assert.Equal("demo-01", web1.GetProperty("host").GetString());
        Assert.True(Guid.TryParse(web1.GetProperty("uuid").GetString(), out _));
        Assert.Equal(["vda", "vdb"], web1.GetProperty("disks").EnumerateArray().Select(d => d.GetProperty("target").GetString()));
        Assert.Equal("shut_off", vms.Single(v => v.GetProperty("name").GetString() == "build-1").GetProperty("power_state").GetString());
    }

    [Fact]
    public async Task VmShowJson_MatchesTheGrpcRecord()
    {
        var expected = (await fixture.Fleet.GetVmAsync(new Api.V1.GetVmRequest { Key = "demo-01/db-1" })).Vm;
        var result = await CliAsync("vm", "show", "demo-01/db-1", "--format", "json");
        Assert.True(result.ExitCode == 0, ProcessRunner.Describe(result));
        using var json = JsonDocument.Parse(result.StandardOutput);
        var vm = json.RootElement;
        Assert.Equal(expected.Uuid, vm.GetProperty("uuid").GetString());
        Assert.Equal("db", vm.GetProperty("labels").GetProperty("tier").GetString());
        var disks = vm.GetProperty("disks").EnumerateArray().ToList();
        Assert.Equal(expected.Disks.Select(d => d.SourcePath), disks.Select(d => d.GetProperty("source_path").GetString()));
        Assert.All(disks, d => Assert.Equal("qcow2", d.GetProperty("format").GetString()));
        Assert.All(disks, d => Assert.Equal(1, d.GetProperty("chain_depth").GetInt32()));
    }

    [Fact]
    public async Task ChainShowJson_ListsTheActiveLayer()
    {
        var result = await CliAsync("chain", "show", "demo-01/legacy-1/vda", "--format", "json");
        Assert.True(result.ExitCode == 0, ProcessRunner.Describe(result));
        using var json = JsonDocument.Parse(result.StandardOutput);
        var layer = Assert.Single(json.RootElement.GetProperty("layers").EnumerateArray().ToList());
        Assert.Equal("raw", layer.GetProperty("format").GetString());
        Assert.Equal(0, layer.GetProperty("depth").GetInt32());
    }

    [Theory]
    [InlineData(3, "not known", "vm", "show", "demo-01/ghost")]
    [InlineData(4, "host unavailable", "vm", "show", "kvm-77/web-1")]
    [InlineData(2, "HOST/VM", "vm", "show", "demo-01")]
    public async Task Errors_ExitCodeAndReasonOnStderr(int exitCode, string reason, params string[] args)
    {
        var result = await CliAsync(args);
        Assert.Equal(exitCode, result.ExitCode);
        Assert.Empty(result.StandardOutput);
        Assert.Contains(reason, result.StandardError, StringComparison.Ordinal);
    }

    [Fact]
    public async Task HostListTable_IsForPeople()
    {
        var result = await CliAsync("host", "list");
        Assert.True(result.ExitCode == 0, ProcessRunner.Describe(result));
        var lines = result.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith("NAME", lines[0], StringComparison.Ordinal);
        Assert.Contains("demo-01", lines[1], StringComparison.Ordinal);
        Assert.DoesNotContain("\u001b[", result.StandardOutput, StringComparison.Ordinal);
    }
}
