using Orchestrator.Cli.Tests.Fakes;

namespace Orchestrator.Cli.Tests;

/// <summary>Bad command lines end with exit code 2, an "error:" line naming the culprit, and no call.</summary>
public sealed class UsageTests
{
    [Theory]
    [InlineData("kvm-01")]
    [InlineData("kvm-01/")]
    [InlineData("/web-1")]
    [InlineData("kvm-01/web-1/vda")]
    [InlineData("kvm-01/ /")]
    [InlineData("")]
    public async Task RunAsync_VmShowWithMalformedKey_ExitsWithUsageErrorNamingTheArgument(string key)
    {
        var invoker = new FakeCallInvoker();

        CliRun run = await CliRun.RunAsync(invoker, "vm", "show", key);

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.StartsWith("error: argument HOST/VM:", run.Stderr, StringComparison.Ordinal);
        Assert.Contains("exactly 2 non-empty parts", run.Stderr, StringComparison.Ordinal);
        Assert.Empty(run.Stdout);
        Assert.Empty(run.Connections);
        Assert.Empty(invoker.Calls);
    }

    [Theory]
    [InlineData("kvm-01/web-1")]
    [InlineData("kvm-01/web-1/vda/extra")]
    [InlineData("kvm-01//vda")]
    [InlineData("kvm-01/web-1/")]
    public async Task RunAsync_ChainShowWithMalformedKey_ExitsWithUsageErrorNamingTheArgument(string key)
    {
        var invoker = new FakeCallInvoker();

        CliRun run = await CliRun.RunAsync(invoker, "chain", "show", key);

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.StartsWith("error: argument HOST/VM/DISK:", run.Stderr, StringComparison.Ordinal);
        Assert.Contains("exactly 3 non-empty parts", run.Stderr, StringComparison.Ordinal);
        Assert.Empty(run.Stdout);
        Assert.Empty(invoker.Calls);
    }

    [Theory]
    [InlineData("vm", "list", "--host", "kvm-01/web-1")]
    [InlineData("vm", "list", "--host", "")]
    [InlineData("vm", "show")]
    [InlineData("vm", "show", "a/b", "c/d")]
    [InlineData("vm")]
    [InlineData()]
    [InlineData("volume", "list")]
    [InlineData("vm", "list", "--format", "xml")]
    [InlineData("vm", "list", "--timeout", "0")]
    [InlineData("vm", "list", "--timeout", "-5")]
    [InlineData("vm", "list", "--timeout", "soon")]
    [InlineData("vm", "list", "--colour")]
    public async Task RunAsync_BadCommandLine_ExitsWithUsageErrorAndSendsNothing(params string[] args)
    {
        var invoker = new FakeCallInvoker();

        CliRun run = await CliRun.RunAsync(invoker, args);

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.StartsWith("error: ", run.Stderr, StringComparison.Ordinal);
        Assert.Contains("--help' for usage.", run.Stderr, StringComparison.Ordinal);
        Assert.Empty(run.Stdout);
        Assert.Empty(invoker.Calls);
    }

    [Fact]
    public async Task RunAsync_FormatNotAllowed_ListsEachChoiceOnOneErrorLine()
    {
        CliRun run = await CliRun.RunAsync(new FakeCallInvoker(), "host", "list", "--format", "xml");

        string firstLine = run.Stderr.Split('\n')[0];
        Assert.Contains("'xml'", firstLine, StringComparison.Ordinal);
        Assert.Contains("'table'", firstLine, StringComparison.Ordinal);
        Assert.Contains("'json'", firstLine, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("ftp://kvm-01:7070")]
    [InlineData("kvm-01:7070")]
    [InlineData("not a url")]
    public async Task RunAsync_EndpointNotHttp_ExitsWithUsageError(string endpoint)
    {
        var invoker = new FakeCallInvoker();

        CliRun run = await CliRun.RunAsync(invoker, "host", "list", "--endpoint", endpoint);

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.StartsWith("error: --endpoint:", run.Stderr, StringComparison.Ordinal);
        Assert.Empty(run.Connections);
    }

    [Fact]
    public async Task RunAsync_EndpointVariableNotHttp_ExitsWithUsageErrorNamingTheVariable()
    {
        var variables = new Dictionary<string, string> { ["ORCHESTRATOR_ENDPOINT"] = "kvm-01" };

        CliRun run = await CliRun.RunAsync(new FakeCallInvoker(), variables, "host", "list");

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.StartsWith("error: ORCHESTRATOR_ENDPOINT:", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task RunAsync_Help_PrintsCommandsAndExitCodesAndSucceeds()
    {
        CliRun run = await CliRun.RunAsync(new FakeCallInvoker(), "--help");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Contains("host", run.Stdout, StringComparison.Ordinal);
        Assert.Contains("chain", run.Stdout, StringComparison.Ordinal);
        Assert.Contains("Exit codes:", run.Stdout, StringComparison.Ordinal);
        Assert.Contains("ORCHESTRATOR_ENDPOINT", run.Stdout, StringComparison.Ordinal);
        foreach ((int code, string meaning) in ExitCodes.All)
        {
            Assert.Contains($"{code,3}  {meaning}", run.Stdout, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task RunAsync_HelpOfCommandMissingItsArgument_PrintsHelpNotAnError()
    {
        CliRun run = await CliRun.RunAsync(new FakeCallInvoker(), "vm", "show", "--help");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Contains("<HOST/VM>", run.Stdout, StringComparison.Ordinal);
        Assert.Contains("Exit codes:", run.Stdout, StringComparison.Ordinal);
        Assert.Empty(run.Stderr);
    }
}
