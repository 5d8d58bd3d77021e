using System.Text.Json;
using Orchestrator.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace Orchestrator.IntegrationTests.Deploy;

/// <summary>
/// deploy/local/cluster.sh in simulated mode, as an operator runs it: PostgreSQL and two silo processes whose simulated
/// hosts seed 20 VMs each, seen through the real CLI, then taken down. A slow process test (about a minute): it
/// starts PostgreSQL and two silos, with the binaries the tests were built with (--no-build).
/// </summary>
public sealed class LocalClusterScriptTests(ITestOutputHelper output)
{
    [Fact]
    public async Task UpSimulated_TwoHostsOfTwentyVms_CliListsFortyVmsThenDownStopsEverything()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"orchestrator-cluster-sh-{Guid.NewGuid():N}");
        var env = new Dictionary<string, string?> { ["CLUSTER_DIR"] = dir };
        var basePort = FreeRange();
        var pgPort = Repo.FreePort();
        var siloPort = FreeRange();
        try
        {
            var up = await ClusterAsync(env, TimeSpan.FromMinutes(6),
                "up", "--simulated", "--hosts", "2", "--vms-per-host", "20", "--no-install", "--no-build", "--configuration", Repo.Configuration,
                "--base-port", basePort.ToString(System.Globalization.CultureInfo.InvariantCulture),
                "--pg-port", pgPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
                "--silo-port", siloPort.ToString(System.Globalization.CultureInfo.InvariantCulture));
            output.WriteLine(up.StandardError);
            Assert.True(up.ExitCode == 0, ProcessRunner.Describe(up));
            Assert.Contains("sim-02", up.StandardOutput, StringComparison.Ordinal);

            var list = await ProcessRunner.RunAsync("dotnet", [Repo.CliDll, "vm", "list", "--format", "json", "--endpoint", $"http://127.0.0.1:{basePort}"]);
            Assert.True(list.ExitCode == 0, ProcessRunner.Describe(list));
            using var json = JsonDocument.Parse(list.StandardOutput);
            var vms = json.RootElement.EnumerateArray().ToList();
            Assert.Equal(40, vms.Count);
            Assert.Equal(20, vms.Count(v => v.GetProperty("host").GetString() == "sim-01"));
            Assert.Equal(20, vms.Count(v => v.GetProperty("host").GetString() == "sim-02"));
            Assert.Contains(vms, v => v.GetProperty("key").GetString() == "sim-02/vm-00020");
            Assert.All(vms, v => Assert.Equal("scale", v.GetProperty("labels").GetProperty("fleet").GetString()));
            Assert.All(vms, v => Assert.Equal(2, v.GetProperty("disks").GetArrayLength()));

            var status = await ClusterAsync(env, TimeSpan.FromMinutes(1), "status");
            Assert.True(status.ExitCode == 0, ProcessRunner.Describe(status));
            Assert.Contains("simulated", status.StandardOutput, StringComparison.Ordinal);

            var down = await ClusterAsync(env, TimeSpan.FromMinutes(3), "down");
            Assert.True(down.ExitCode == 0, ProcessRunner.Describe(down));
            var after = await ClusterAsync(env, TimeSpan.FromMinutes(1), "status");
            Assert.Equal(3, after.ExitCode); // no cluster
            Assert.Empty(Directory.GetFiles(Path.Combine(dir, "silos"), "silo.pid", SearchOption.AllDirectories));
        }
        finally
        {
            await ClusterAsync(env, TimeSpan.FromMinutes(3), "down");
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }

    [Fact]
    public async Task Up_TooManyVmsWithoutSimulated_RefusedNamingTheOption()
    {
        var env = new Dictionary<string, string?> { ["CLUSTER_DIR"] = Path.Combine(Path.GetTempPath(), $"orchestrator-cluster-sh-{Guid.NewGuid():N}") };
        var result = await ClusterAsync(env, TimeSpan.FromMinutes(1), "up", "--vms-per-host", "11", "--no-install", "--no-build");
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("--vms-per-host must be 0..10", result.StandardError, StringComparison.Ordinal);
        Assert.False(Directory.Exists(env["CLUSTER_DIR"]));
    }

    private static Task<ProcessResult> ClusterAsync(Dictionary<string, string?> env, TimeSpan timeout, params string[] args) =>
        ProcessRunner.RunAsync("bash", [Repo.Script("deploy/local/cluster.sh"), .. args], env, timeout);

    /// <summary>A port whose next 20 neighbours are free now too (silo i uses BASE+10*(i-1) and BASE+1+10*(i-1)).</summary>
    private static int FreeRange()
    {
        for (var attempt = 0; attempt < 50; attempt++)
        {
            var port = Random.Shared.Next(20_000, 60_000);
            if (Enumerable.Range(port, 21).All(IsFree))
            {
                return port;
            }
        }

        throw new InvalidOperationException("no range of 21 free ports found");
    }

    private static bool IsFree(int port)
    {
        try
        {
            using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, port);
            listener.Start();
            return true;
        }
        catch (System.Net.Sockets.SocketException)
        {
            return false;
        }
    }
}
