using Orchestrator.Api.V1;
using Orchestrator.Cli.Tests.Fakes;

namespace Orchestrator.Cli.Tests;

public sealed class GlobalOptionsTests
{
    private static FakeCallInvoker HostsInvoker() =>
        new FakeCallInvoker().On<ListHostsRequest, ListHostsResponse>("ListHosts", _ => new ListHostsResponse());

    [Fact]
    public async Task RunAsync_NoEndpointAnywhere_UsesTheLocalSilo()
    {
        CliRun run = await CliRun.RunAsync(HostsInvoker(), "host", "list");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal(new Uri("http://127.0.0.1:7070"), Assert.Single(run.Connections));
    }

    [Fact]
    public async Task RunAsync_EndpointVariableSet_UsesIt()
    {
        var variables = new Dictionary<string, string> { ["ORCHESTRATOR_ENDPOINT"] = "http://kvm-02:7070" };

        CliRun run = await CliRun.RunAsync(HostsInvoker(), variables, "host", "list");

        Assert.Equal(new Uri("http://kvm-02:7070"), Assert.Single(run.Connections));
    }

    [Fact]
    public async Task RunAsync_EndpointOptionAndVariable_OptionWins()
    {
        var variables = new Dictionary<string, string> { ["ORCHESTRATOR_ENDPOINT"] = "http://kvm-02:7070" };

        CliRun run = await CliRun.RunAsync(HostsInvoker(), variables, "host", "list", "--endpoint", "https://kvm-03:7443");

        Assert.Equal(new Uri("https://kvm-03:7443"), Assert.Single(run.Connections));
    }

    [Fact]
    public async Task RunAsync_GlobalOptionsBeforeTheCommand_AreAccepted()
    {
        CliRun run = await CliRun.RunAsync(HostsInvoker(), "--endpoint", "http://kvm-04:7070", "--format", "json", "host", "list");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal("[]", run.Stdout.Trim());
        Assert.Equal(new Uri("http://kvm-04:7070"), Assert.Single(run.Connections));
    }

    [Theory]
    [InlineData(null, 30.0)]
    [InlineData("5", 5.0)]
    [InlineData("0.5", 0.5)]
    public async Task RunAsync_Timeout_SetsTheCallDeadline(string? timeout, double expectedSeconds)
    {
        FakeCallInvoker invoker = HostsInvoker();
        string[] args = timeout is null ? ["host", "list"] : ["host", "list", "--timeout", timeout];
        DateTime before = DateTime.UtcNow;

        await CliRun.RunAsync(invoker, args);

        DateTime deadline = Assert.Single(invoker.Calls).Options.Deadline!.Value;
        TimeSpan fromStart = deadline - before;
        Assert.InRange(fromStart.TotalSeconds, expectedSeconds, expectedSeconds + 5);
    }
}
