using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Orchestrator.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace Orchestrator.IntegrationTests.Deploy;

/// <summary>
/// deploy/demo.sh --once as a newcomer runs it, with the binaries the tests were built with (--no-build): in the mode
/// this machine gets (root with the lab installable: real, a private libvirt host and a real guest; else simulated),
/// and in simulated mode forced. Each run gets its own ports, data directory and host name.
/// </summary>
public sealed partial class DemoScriptTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"orchestrator-demo-{Guid.NewGuid():N}");
    private readonly string _host = $"demo-t{Random.Shared.Next(100_000, 999_999).ToString(CultureInfo.InvariantCulture)}";

    private static string LabDir => Environment.GetEnvironmentVariable("LAB_DIR") is { Length: > 0 } d ? d : Path.Combine(Repo.Root, ".lab");

    public void Dispose()
    {
        if (Directory.Exists(_dir))
        {
            Directory.Delete(_dir, recursive: true);
        }
    }

    [Fact]
    public async Task Once_TheModeThisMachineGets_ExitsZeroEveryImagePathPrintedExistedAndTheLabHostIsGone()
    {
        var root = (await ProcessRunner.RunAsync("id", ["-u"])).StandardOutput.Trim() == "0";
        try
        {
            var demo = await DemoAsync();
            var lines = demo.StandardOutput.Split('\n');
            Assert.StartsWith(root ? "== mode: REAL" : "== mode: SIMULATED", lines[0], StringComparison.Ordinal);
            var checkedPaths = CheckedPaths(demo.StandardOutput);
            var printed = PrintedImagePaths(demo.StandardOutput);
            Assert.Equal(printed, checkedPaths.Order(StringComparer.Ordinal).ToList());
            if (!root)
            {
                Assert.All(printed, p => Assert.True(File.Exists(p), p));
                return;
            }

            // Real: the live backup of the guest, its restore that resumed counting, and the clean-up of the lab host.
            Assert.Contains("booted and counts on from the backup point", demo.StandardOutput, StringComparison.Ordinal);
            var backups = printed.Where(p => p.StartsWith(_dir + "/", StringComparison.Ordinal)).ToList();
            Assert.Equal(2, backups.Count); // vda.qcow2 and vdb.raw of the set, kept after the demo
            var check = await ProcessRunner.RunAsync(Repo.Script("tests/lab/counter-check"), backups);
            Assert.True(check.ExitCode == 0, "backup not consistent: " + ProcessRunner.Describe(check));
            using var report = JsonDocument.Parse(check.StandardOutput);
            Assert.True(report.RootElement.GetProperty("max").GetInt64() >= 20, check.StandardOutput);
            var onHost = printed.Except(backups).ToList();
            Assert.Equal(4, onHost.Count); // web-1's and web-1-restored's two disks each
            Assert.All(onHost, p => Assert.StartsWith(Path.Combine(LabDir, "hosts", _host) + "/", p, StringComparison.Ordinal));
            Assert.All(onHost, p => Assert.False(File.Exists(p), $"{p} left behind"));
            Assert.False(Directory.Exists(Path.Combine(LabDir, "hosts", _host)), "the demo's lab host directory is left behind");
        }
        finally
        {
            if (root)
            {
                await ProcessRunner.RunAsync("bash", [Repo.Script("tests/lab/host.sh"), "clean", _host], timeout: TimeSpan.FromMinutes(2));
            }
        }
    }

    [Fact]
    public async Task Once_SimulatedForced_EveryImagePathPrintedExistsAsTheHostReportsIt()
    {
        var demo = await DemoAsync("--simulated");
        Assert.StartsWith("== mode: SIMULATED", demo.StandardOutput, StringComparison.Ordinal);
        var printed = PrintedImagePaths(demo.StandardOutput);
        Assert.Equal(printed, CheckedPaths(demo.StandardOutput).Order(StringComparer.Ordinal).ToList());
        Assert.True(printed.Count >= 8, string.Join('\n', printed));
        Assert.All(printed, p => Assert.StartsWith(_dir + "/simulated/", p, StringComparison.Ordinal));
        Assert.All(printed, p => Assert.True(File.Exists(p), p));

        // web-1's vda as `chain show` printed it: the active clone names its template, in the file itself.
        var chain = ChainLine().Matches(demo.StandardOutput).ToDictionary(m => m.Groups["role"].Value, m => m.Groups["path"].Value);
        var info = await ProcessRunner.RunAsync("qemu-img", ["info", "-f", "qcow2", "--output", "json", chain["active"]]);
        Assert.True(info.ExitCode == 0, ProcessRunner.Describe(info));
        using var json = JsonDocument.Parse(info.StandardOutput);
        Assert.Equal(chain["base"], json.RootElement.GetProperty("backing-filename").GetString());
        Assert.Equal(20L << 30, json.RootElement.GetProperty("virtual-size").GetInt64());

        // Every qcow2 printed is a valid image; the backup copy of a 4 GiB raw disk is a 4 GiB file.
        foreach (var qcow2 in printed.Where(p => p.EndsWith(".qcow2", StringComparison.Ordinal)))
        {
            var check = await ProcessRunner.RunAsync("qemu-img", ["check", "-f", "qcow2", qcow2]);
            Assert.True(check.ExitCode == 0, ProcessRunner.Describe(check));
        }

        var vdb = Assert.Single(printed, p => p.EndsWith("/vdb.raw", StringComparison.Ordinal));
        Assert.Equal(4L << 30, new FileInfo(vdb).Length);
    }

    private async Task<ProcessResult> DemoAsync(params string[] args)
    {
        var env = new Dictionary<string, string?>
        {
            ["DEMO_DIR"] = _dir,
            ["DEMO_HOST"] = _host,
            ["DEMO_GRPC_PORT"] = Repo.FreePort().ToString(CultureInfo.InvariantCulture),
            ["DEMO_HTTP_PORT"] = Repo.FreePort().ToString(CultureInfo.InvariantCulture),
            ["DEMO_SILO_PORT"] = Repo.FreePort().ToString(CultureInfo.InvariantCulture),
        };
        var started = DateTime.UtcNow;
        var demo = await ProcessRunner.RunAsync("bash", [Repo.Script("deploy/demo.sh"), "--once", "--no-build", "--configuration", Repo.Configuration, .. args], env, TimeSpan.FromMinutes(8));
        output.WriteLine($"demo.sh --once {string.Join(' ', args)}: exit {demo.ExitCode} in {(DateTime.UtcNow - started).TotalSeconds:F1} s");
        output.WriteLine(demo.StandardOutput);
        output.WriteLine(demo.StandardError);
        Assert.True(demo.ExitCode == 0, ProcessRunner.Describe(demo));
        return demo;
    }

    /// <summary>Every image path in the output (sorted, distinct), found independently of the script's own check.</summary>
    private static List<string> PrintedImagePaths(string text) =>
        [.. ImagePath().Matches(text).Select(m => m.Value).Distinct().Order(StringComparer.Ordinal)];

    /// <summary>The paths the script's final check reports present ("ok PATH ..."), and its summary line.</summary>
    private static List<string> CheckedPaths(string text)
    {
        var ok = OkLine().Matches(text).Select(m => m.Groups["path"].Value).ToList();
        Assert.Contains($"image paths checked: {ok.Count}, all exist", text, StringComparison.Ordinal);
        Assert.NotEmpty(ok);
        return ok;
    }

    [GeneratedRegex(@"/[^\s""',]+\.(qcow2|raw|img)\b")]
    private static partial Regex ImagePath();

    [GeneratedRegex(@"^   ok       (?<path>/\S+)  ", RegexOptions.Multiline)]
    private static partial Regex OkLine();

    [GeneratedRegex(@"^\s+\d+\s+qcow2\s+(?<role>active|base)\s+(?<path>/\S+)$", RegexOptions.Multiline)]
    private static partial Regex ChainLine();
}
