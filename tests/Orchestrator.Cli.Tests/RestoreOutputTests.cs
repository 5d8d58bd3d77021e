using System.Text.Json;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Tests.Fakes;

namespace Orchestrator.Cli.Tests;

/// <summary><c>restore --define</c> shows what the new definition no longer shares with the original.</summary>
public sealed class RestoreOutputTests
{
    private const string Change = "serial 0: file '/var/log/web-1.log' -> '/var/log/web-1-copy.log'";

    private static FakeCallInvoker Invoker() => new FakeCallInvoker().On<RestoreRequest, RestoreResponse>(
        "Restore",
        _ => new RestoreResponse
        {
            NewName = "web-1-copy",
            Images = { "/img/web-1-copy-vda.qcow2" },
            Defined = true,
            Uuid = "0d4c6b1e-3f7a-4e55-9a52-1b2c3d4e5f60",
            Changes = { Change, "hostdev: address domain='0x0000' removed" },
        });

    [Fact]
    public async Task Restore_DefineWithChanges_TableListsEachChange()
    {
        CliRun run = await CliRun.RunAsync(Invoker(), "restore", Samples.RunKey, "--as", "web-1-copy", "--define");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var lines = run.Stdout.Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(["REWRITTEN OR DROPPED", Change, "hostdev: address domain='0x0000' removed"], lines[^3..]);
    }

    [Fact]
    public async Task Restore_DefineWithChangesAsJson_ChangesArray()
    {
        CliRun run = await CliRun.RunAsync(Invoker(), "restore", Samples.RunKey, "--as", "web-1-copy", "--define", "--format", "json");

        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal([Change, "hostdev: address domain='0x0000' removed"], json.RootElement.GetProperty("changes").EnumerateArray().Select(c => c.GetString()));
    }
}
