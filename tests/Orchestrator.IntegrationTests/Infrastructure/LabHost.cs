using System.Globalization;
using System.Text.Json;

namespace Orchestrator.IntegrationTests.Infrastructure;

/// <summary>
/// One real libvirt host of the test lab (tests/lab/host.sh: libvirtd + virtlogd in a private mount namespace)
/// with counter-writing guests (tests/lab/vm.sh). Fails, never skips, when the lab cannot start.
/// </summary>
public sealed class LabHost(string name) : IAsyncLifetime
{
    public string Name { get; } = name;

    public string Uri { get; private set; } = "";

    public string LabDir { get; } = Environment.GetEnvironmentVariable("LAB_DIR") is { Length: > 0 } d ? d : Path.Combine(Repo.Root, ".lab");

    public string HostDir => Path.Combine(LabDir, "hosts", Name);

    public string ImagesDir => Path.Combine(HostDir, "images");

    public async Task InitializeAsync()
    {
        await LabAsync("guest-build.sh");
        Uri = (await LabAsync("host.sh", "start", Name)).Trim().Split('\n')[^1].Trim();
    }

    public async Task DisposeAsync()
    {
        if (Environment.GetEnvironmentVariable("ORCH_LAB_KEEP") != "1")
        {
            await LabAsync("host.sh", "clean", Name);
        }
    }

    /// <summary>A fresh running guest writing its counter; returns once it wrote record 1.</summary>
    public async Task CreateGuestAsync(string vm, string disks, int intervalMs = 100)
    {
        await LabAsync("vm.sh", "delete", Name, vm);
        await LabAsync("vm.sh", "create", Name, vm, "--disks", disks, "--interval-ms", intervalMs.ToString(CultureInfo.InvariantCulture));
        await WaitForSeqAsync(vm, 1);
    }

    public async Task<long> WaitForSeqAsync(string vm, long seq, int timeoutSeconds = 240)
    {
        var output = await LabAsync("vm.sh", "wait", Name, vm, "--seq", seq.ToString(CultureInfo.InvariantCulture), "--timeout", timeoutSeconds.ToString(CultureInfo.InvariantCulture));
        return long.Parse(output.Trim().Split('\n')[^1], CultureInfo.InvariantCulture);
    }

    public Task<string> VirshAsync(params string[] args) => RunAsync("virsh", ["-c", Uri, .. args]);

    /// <summary>tests/lab/counter-check on a set of images; the parsed JSON report.</summary>
    public async Task<CounterReport> CounterCheckAsync(params string[] images)
    {
        var r = await ProcessRunner.RunAsync(Repo.Script("tests/lab/counter-check"), images, Env());
        Assert.True(r.ExitCode is 0 or 1, "counter-check failed: " + ProcessRunner.Describe(r));
        using var json = JsonDocument.Parse(r.StandardOutput);
        var root = json.RootElement;
        return new CounterReport(
            root.GetProperty("consistent").GetBoolean(),
            root.TryGetProperty("max", out var max) && max.ValueKind == JsonValueKind.Number ? max.GetInt64() : -1,
            r.StandardOutput.Trim());
    }

    /// <summary>Files of our backup overlays left anywhere under the host's images.</summary>
    public IReadOnlyList<string> LeftoverOverlays() =>
        Directory.Exists(ImagesDir) ? Directory.GetFiles(ImagesDir, "*.orch-*.qcow2", SearchOption.AllDirectories) : [];

    public Task<string> LabAsync(string script, params string[] args) => RunAsync("bash", [Repo.Script($"tests/lab/{script}"), .. args]);

    private Dictionary<string, string?> Env() => new() { ["LAB_DIR"] = LabDir };

    private async Task<string> RunAsync(string program, string[] args)
    {
        var r = await ProcessRunner.RunAsync(program, args, Env(), TimeSpan.FromMinutes(5));
        if (r.ExitCode != 0)
        {
            throw new InvalidOperationException($"{program} {string.Join(' ', args)}: " + ProcessRunner.Describe(r));
        }

        return r.StandardOutput;
    }
}

public sealed record CounterReport(bool Consistent, long MaxSeq, string Json);
