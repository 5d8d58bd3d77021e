using System.Text.Json;
using Google.Rpc;
using Grpc.Core;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Tests.Fakes;

namespace Orchestrator.Cli.Tests;

/// <summary>Whole commands against a fake call invoker: what is sent, what is printed, the exit code.</summary>
public sealed class CommandTests
{
    [Fact]
    public async Task HostList_Json_PrintsOneArrayDocument()
    {
        var invoker = new FakeCallInvoker().On<ListHostsRequest, ListHostsResponse>(
            "ListHosts", _ => new ListHostsResponse { Hosts = { Samples.OfflineHost(), Samples.OnlineHost() } });

        CliRun run = await CliRun.RunAsync(invoker, "host", "list", "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Empty(run.Stderr);
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal(["kvm-01", "kvm-02"], json.RootElement.EnumerateArray().Select(h => h.GetProperty("name").GetString()!).ToArray());
    }

    [Fact]
    public async Task HostList_Table_PrintsHeaderAndOneRowPerHost()
    {
        var invoker = new FakeCallInvoker().On<ListHostsRequest, ListHostsResponse>(
            "ListHosts", _ => new ListHostsResponse { Hosts = { Samples.OnlineHost(), Samples.OfflineHost() } });

        CliRun run = await CliRun.RunAsync(invoker, "host", "list");

        string[] lines = run.Stdout.Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(3, lines.Length);
        Assert.StartsWith("NAME", lines[0], StringComparison.Ordinal);
        Assert.DoesNotContain('\u001b', run.Stdout);
    }

    [Fact]
    public async Task VmList_WithHost_SendsTheHost()
    {
        var invoker = new FakeCallInvoker().On<ListVmsRequest, ListVmsResponse>(
            "ListVms", _ => new ListVmsResponse { Vms = { Samples.RunningVm() } });

        CliRun run = await CliRun.RunAsync(invoker, "vm", "list", "--host", "kvm-01", "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var request = Assert.IsType<ListVmsRequest>(Assert.Single(invoker.Calls).Request);
        Assert.Equal("kvm-01", request.Host);
    }

    [Fact]
    public async Task VmList_SomeHostsUnavailable_WarnsOnStderrAndKeepsStdoutOneDocument()
    {
        var invoker = new FakeCallInvoker().On<ListVmsRequest, ListVmsResponse>(
            "ListVms",
            _ => new ListVmsResponse { Vms = { Samples.RunningVm() }, UnavailableHosts = { "kvm-03", "kvm-02" } });

        CliRun run = await CliRun.RunAsync(invoker, "vm", "list", "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal(1, json.RootElement.GetArrayLength());
        Assert.Equal(
            [
                "warning: host kvm-02 is unavailable (its silo is down); its VMs are not listed",
                "warning: host kvm-03 is unavailable (its silo is down); its VMs are not listed",
            ],
            run.Stderr.Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public async Task VmList_TheRequestedHostUnavailable_ExitsUnavailableWithNothingOnStdout()
    {
        var invoker = new FakeCallInvoker().On<ListVmsRequest, ListVmsResponse>(
            "ListVms", _ => new ListVmsResponse { UnavailableHosts = { "kvm-02" } });

        CliRun run = await CliRun.RunAsync(invoker, "vm", "list", "--host", "kvm-02", "--format", "json");

        Assert.Equal(ExitCodes.Unavailable, run.ExitCode);
        Assert.Empty(run.Stdout);
        Assert.Equal("error: host kvm-02 is unavailable: its silo is down" + Environment.NewLine, run.Stderr);
    }

    [Fact]
    public async Task VmShow_SendsTheKeyAndPrintsOneObject()
    {
        var invoker = new FakeCallInvoker().On<GetVmRequest, GetVmResponse>(
            "GetVm", _ => new GetVmResponse { Vm = Samples.RunningVm() });

        CliRun run = await CliRun.RunAsync(invoker, "vm", "show", "kvm-01/web-1", "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal("kvm-01/web-1", Assert.IsType<GetVmRequest>(Assert.Single(invoker.Calls).Request).Key);
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal(JsonValueKind.Object, json.RootElement.ValueKind);
        Assert.Equal("running", json.RootElement.GetProperty("power_state").GetString());
    }

    [Fact]
    public async Task VmShow_NotFound_ExitsNotFoundWithServerMessageAndEmptyStdout()
    {
        var invoker = new FakeCallInvoker().Fail("GetVm", Samples.RichError(Code.NotFound, "VM kvm-01/web-9 not found"));

        CliRun run = await CliRun.RunAsync(invoker, "vm", "show", "kvm-01/web-9", "--format", "json");

        Assert.Equal(ExitCodes.NotFound, run.ExitCode);
        Assert.Empty(run.Stdout);
        Assert.Equal("error: VM kvm-01/web-9 not found" + Environment.NewLine, run.Stderr);
    }

    [Fact]
    public async Task VmShow_HostSiloDown_ExitsUnavailable()
    {
        var invoker = new FakeCallInvoker().Fail(
            "GetVm", Samples.RichError(Code.Unavailable, "host kvm-02 is unavailable", Samples.HostUnavailable("kvm-02")));

        CliRun run = await CliRun.RunAsync(invoker, "vm", "show", "kvm-02/db-1");

        Assert.Equal(ExitCodes.Unavailable, run.ExitCode);
        Assert.Contains("reason: HOST_UNAVAILABLE (host=kvm-02)", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task VmShow_ServerAnswersWithoutVm_ExitsInternal()
    {
        var invoker = new FakeCallInvoker().On<GetVmRequest, GetVmResponse>("GetVm", _ => new GetVmResponse());

        CliRun run = await CliRun.RunAsync(invoker, "vm", "show", "kvm-01/web-1");

        Assert.Equal(ExitCodes.Internal, run.ExitCode);
        Assert.Empty(run.Stdout);
    }

    [Fact]
    public async Task ChainShow_SendsTheKeyAndPrintsLayers()
    {
        var invoker = new FakeCallInvoker().On<GetDiskChainRequest, GetDiskChainResponse>(
            "GetDiskChain", _ => new GetDiskChainResponse { Chain = Samples.Chain() });

        CliRun run = await CliRun.RunAsync(invoker, "chain", "show", "kvm-01/web-1/vda", "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal("kvm-01/web-1/vda", Assert.IsType<GetDiskChainRequest>(Assert.Single(invoker.Calls).Request).Key);
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal(2, json.RootElement.GetProperty("layers").GetArrayLength());
    }

    [Fact]
    public async Task ChainShow_ServerRejectsAField_ExitsInvalidArgumentNamingTheField()
    {
        var invoker = new FakeCallInvoker().Fail(
            "GetDiskChain",
            Samples.RichError(Code.InvalidArgument, "no such disk target", Samples.BadField("key", "vm web-1 has no disk sdz")));

        CliRun run = await CliRun.RunAsync(invoker, "chain", "show", "kvm-01/web-1/sdz");

        Assert.Equal(ExitCodes.InvalidArgument, run.ExitCode);
        Assert.Equal(
            "error: no such disk target" + Environment.NewLine + "  field key: vm web-1 has no disk sdz" + Environment.NewLine,
            run.Stderr);
    }

    [Fact]
    public async Task AnyCommand_CancelledWhileCalling_ExitsInterrupted()
    {
        using var cancellation = new CancellationTokenSource();
        var invoker = new FakeCallInvoker().On<ListHostsRequest, ListHostsResponse>("ListHosts", _ =>
        {
            cancellation.Cancel();
            throw new RpcException(new Grpc.Core.Status(StatusCode.Cancelled, "Call canceled by the client."));
        });

        CliRun run = await CliRun.RunAsync(invoker, null, cancellation.Token, "host", "list");

        Assert.Equal(ExitCodes.Interrupted, run.ExitCode);
        Assert.Equal("error: interrupted" + Environment.NewLine, run.Stderr);
        Assert.Empty(run.Stdout);
    }
}
