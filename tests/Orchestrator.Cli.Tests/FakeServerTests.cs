using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Orchestrator.Cli.Tests.Fakes;

namespace Orchestrator.Cli.Tests;

/// <summary>
/// The public entry point, <see cref="CliApp.RunAsync(string[], TextWriter, TextWriter, CancellationToken)"/>,
/// against a real gRPC server over h2c: channel, HTTP/2, status details trailers, exit codes.
/// </summary>
public sealed class FakeServerTests : IAsyncLifetime
{
    private FakeFleetServer? _server;

    private string Endpoint => _server!.Address.ToString();

    public async Task InitializeAsync() => _server = await FakeFleetServer.StartAsync();

    public async Task DisposeAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }
    }

    private static async Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int exitCode = await CliApp.RunAsync(args, stdout, stderr);
        return (exitCode, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public async Task VmListJson_AgainstServer_PrintsTheVmsAndWarnsAboutTheDownHost()
    {
        var (exitCode, stdout, stderr) = await RunAsync("vm", "list", "--format", "json", "--endpoint", Endpoint);

        Assert.Equal(ExitCodes.Ok, exitCode);
        using JsonDocument json = JsonDocument.Parse(stdout);
        Assert.Equal(
            ["kvm-01/db-1", "kvm-01/web-1"],
            json.RootElement.EnumerateArray().Select(vm => vm.GetProperty("key").GetString()!).ToArray());
        Assert.Equal("shut_off", json.RootElement[0].GetProperty("power_state").GetString());
        Assert.Contains("warning: host kvm-02 is unavailable", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task HostListTable_AgainstServer_PrintsOneRowPerHost()
    {
        var (exitCode, stdout, _) = await RunAsync("host", "list", "--endpoint", Endpoint);

        Assert.Equal(ExitCodes.Ok, exitCode);
        Assert.Equal(3, stdout.Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries).Length);
    }

    [Fact]
    public async Task VmShow_UnknownVm_ExitsNotFound()
    {
        var (exitCode, stdout, stderr) = await RunAsync("vm", "show", "kvm-01/nope", "--endpoint", Endpoint);

        Assert.Equal(ExitCodes.NotFound, exitCode);
        Assert.Empty(stdout);
        Assert.Equal("error: VM kvm-01/nope not found" + Environment.NewLine, stderr);
    }

    [Fact]
    public async Task VmShow_HostSiloDown_ExitsUnavailableWithReason()
    {
        var (exitCode, _, stderr) = await RunAsync("vm", "show", "kvm-02/db-1", "--endpoint", Endpoint);

        Assert.Equal(ExitCodes.Unavailable, exitCode);
        Assert.Contains("reason: HOST_UNAVAILABLE (host=kvm-02)", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task VmList_ServerRejectsHost_ExitsInvalidArgumentNamingTheField()
    {
        var (exitCode, stdout, stderr) = await RunAsync("vm", "list", "--host", "bogus", "--endpoint", Endpoint);

        Assert.Equal(ExitCodes.InvalidArgument, exitCode);
        Assert.Empty(stdout);
        Assert.Equal(
            "error: unknown host 'bogus'" + Environment.NewLine + "  field host: no such host in the fleet" + Environment.NewLine,
            stderr);
    }

    [Fact]
    public async Task ChainShow_AgainstServer_PrintsTheChain()
    {
        var (exitCode, stdout, _) = await RunAsync("chain", "show", "kvm-01/web-1/vda", "--format", "json", "--endpoint", Endpoint);

        Assert.Equal(ExitCodes.Ok, exitCode);
        using JsonDocument json = JsonDocument.Parse(stdout);
        Assert.Equal("kvm-01/web-1/vda", json.RootElement.GetProperty("key").GetString());
    }

    [Fact]
    public async Task BackupWatchJson_AgainstServer_PrintsJsonLinesUntilTheRunCompletes()
    {
        var (exitCode, stdout, stderr) = await RunAsync("backup", "watch", Samples.RunKey, "--format", "json", "--endpoint", Endpoint);

        Assert.Equal(ExitCodes.Ok, exitCode);
        Assert.Empty(stderr);
        string[] lines = stdout.Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(
            ["admitted", "copying", "completed"],
            lines.Select(line => JsonDocument.Parse(line).RootElement.GetProperty("step").GetString()!).ToArray());
    }

    [Fact]
    public async Task BackupWatch_AgainstServer_RunFails_ExitsRunFailed()
    {
        var (exitCode, stdout, stderr) = await RunAsync("backup", "watch", FakeBackupService.FailingRunKey, "--endpoint", Endpoint);

        Assert.Equal(ExitCodes.RunFailed, exitCode);
        Assert.Equal(2, stdout.Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries).Length);
        Assert.Equal($"error: backup {FakeBackupService.FailingRunKey} failed: no space left on device" + Environment.NewLine, stderr);
    }

    [Fact]
    public async Task BackupWatch_AgainstServer_UnknownRun_ExitsNotFound()
    {
        var (exitCode, stdout, stderr) = await RunAsync("backup", "watch", "kvm-01/web-1/b-nope", "--endpoint", Endpoint);

        Assert.Equal(ExitCodes.NotFound, exitCode);
        Assert.Empty(stdout);
        Assert.Equal("error: backup run kvm-01/web-1/b-nope not found" + Environment.NewLine, stderr);
    }

    [Fact]
    public async Task BackupShow_AgainstServer_PrintsTheRun()
    {
        var (exitCode, stdout, _) = await RunAsync("backup", "show", Samples.RunKey, "--format", "json", "--endpoint", Endpoint);

        Assert.Equal(ExitCodes.Ok, exitCode);
        using JsonDocument json = JsonDocument.Parse(stdout);
        Assert.Equal("completed", json.RootElement.GetProperty("step").GetString());
    }

    [Fact]
    public async Task HostList_NothingListening_ExitsUnavailable()
    {
        int port;
        using (var listener = new TcpListener(IPAddress.Loopback, 0))
        {
            listener.Start();
            port = ((IPEndPoint)listener.LocalEndpoint).Port;
            listener.Stop();
        }

        var (exitCode, stdout, stderr) = await RunAsync("host", "list", "--endpoint", $"http://127.0.0.1:{port}", "--timeout", "10");

        Assert.Equal(ExitCodes.Unavailable, exitCode);
        Assert.Empty(stdout);
        Assert.StartsWith($"error: cannot reach the orchestrator at http://127.0.0.1:{port}: ", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task PolicyApply_AgainstServer_RejectedCron_PointsAtTheLineInTheFile()
    {
        string file = Path.Combine(Path.GetTempPath(), $"orchestrator-cli-{Guid.NewGuid():N}.yaml");
        await File.WriteAllTextAsync(file, "name: p\nkind: live-backup\nschedule:\n  cron: never\n");
        try
        {
            var (exitCode, stdout, stderr) = await RunAsync("policy", "apply", "-f", file, "--endpoint", Endpoint);

            Assert.Equal(ExitCodes.InvalidArgument, exitCode);
            Assert.Empty(stdout);
            Assert.Equal($"error: {file}:4: schedule.cron: 'never' is not a cron expression" + Environment.NewLine, stderr);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public async Task PolicyWatchJson_AgainstServer_RunEndsPartial_ExitsRunFailed()
    {
        var (exitCode, stdout, stderr) = await RunAsync("policy", "watch", "nightly-web", PolicySamples.RunId, "--format", "json", "--endpoint", Endpoint);

        Assert.Equal(ExitCodes.RunFailed, exitCode);
        Assert.Equal(
            ["running", "partial"],
            stdout.Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries).Select(line => JsonDocument.Parse(line).RootElement.GetProperty("state").GetString()!).ToArray());
        Assert.StartsWith($"error: policy nightly-web: run {PolicySamples.RunId} ended partial", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task PolicyWatch_AgainstServer_UnknownRun_ExitsNotFound()
    {
        var (exitCode, _, stderr) = await RunAsync("policy", "watch", "nightly-web", "p-nope", "--endpoint", Endpoint);

        Assert.Equal(ExitCodes.NotFound, exitCode);
        Assert.Equal("error: run p-nope of policy nightly-web not found" + Environment.NewLine, stderr);
    }
}
