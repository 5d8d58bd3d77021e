using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Orchestrator.IntegrationTests.Infrastructure;

/// <summary>
/// One real libvirt host of the test lab (tests/lab/host.sh: libvirtd + virtlogd in a private mount namespace)
/// with counter-writing guests (tests/lab/vm.sh). Fails, never skips, when the lab cannot start. Disposing always
/// stops the host, and removes its directory unless ORCH_LAB_KEEP=1. virsh and qemu-img are test scaffolding here.
/// </summary>
public sealed partial class LabHost(string name) : IAsyncLifetime, IAsyncDisposable
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
        if (!Uri.StartsWith("qemu+unix://", StringComparison.Ordinal))
        {
            throw new InvalidOperationException($"lab host {Name} did not print its URI: '{Uri}'");
        }
    }

    public Task StartAsync() => InitializeAsync();

    public async Task DisposeAsync() =>
        await LabAsync("host.sh", Environment.GetEnvironmentVariable("ORCH_LAB_KEEP") == "1" ? "stop" : "clean", Name);

    async ValueTask IAsyncDisposable.DisposeAsync() => await DisposeAsync();

    /// <summary>A fresh running guest writing its counter; returns once it wrote record 1.</summary>
    public async Task CreateGuestAsync(string vm, string disks, int intervalMs = 100)
    {
        await CreateVmAsync(vm, disks, intervalMs);
        await WaitForSeqAsync(vm, 1);
    }

    /// <summary>
    /// vm.sh create (after deleting a leftover of an earlier run). Disks like "qcow2:64M" or "raw:64M qcow2:64M";
    /// <paramref name="labels"/> become the VM's orchestrator labels (vm.sh --label).
    /// </summary>
    public async Task CreateVmAsync(string vm, string disks, int intervalMs, bool start = true, IReadOnlyDictionary<string, string>? labels = null)
    {
        await LabAsync("vm.sh", "delete", Name, vm);
        List<string> args = ["create", Name, vm, "--disks", disks, "--interval-ms", intervalMs.ToString(CultureInfo.InvariantCulture)];
        if (!start)
        {
            args.Add("--no-start");
        }

        foreach (var (key, value) in labels ?? new Dictionary<string, string>())
        {
            args.AddRange(["--label", $"{key}={value}"]);
        }

        await LabAsync("vm.sh", [.. args]);
    }

    public Task StartVmAsync(string vm) => LabAsync("vm.sh", "start", Name, vm);

    public Task DestroyVmAsync(string vm) => LabAsync("vm.sh", "destroy", Name, vm);

    public async Task<long> WaitForSeqAsync(string vm, long seq, int timeoutSeconds = 240)
    {
        var output = await LabAsync("vm.sh", "wait", Name, vm, "--seq", seq.ToString(CultureInfo.InvariantCulture), "--timeout", timeoutSeconds.ToString(CultureInfo.InvariantCulture));
        return long.Parse(output.Trim().Split('\n')[^1], CultureInfo.InvariantCulture);
    }

    public string ConsolePath(string vm) => Path.Combine(HostDir, "console", vm + ".log");

    /// <summary>The image of a disk, as vm.sh names it: images/VM-vda.qcow2.</summary>
    public string DiskPath(string vm, string target, string format) => Path.Combine(ImagesDir, $"{vm}-{target}.{format}");

    public Task<string> VirshAsync(params string[] args) => RunAsync("virsh", ["-c", Uri, .. args]);

    /// <summary>"running (booted)", "paused (user)", "shut off (destroyed)"... from virsh domstate --reason.</summary>
    public async Task<string> DomainStateAsync(string vm) => (await VirshAsync("domstate", vm, "--reason")).Trim();

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

    /// <summary>
    /// counter-check of an internal snapshot's disk state: qemu-img convert -l of that snapshot into a raw file. A
    /// snapshot's clusters never change once it is written (the guest's later writes copy on write), so this is
    /// valid while the VM runs.
    /// </summary>
    public async Task<CounterReport> CounterCheckSnapshotAsync(string image, string snapshot)
    {
        var raw = Path.Combine(Path.GetTempPath(), $"ckpt-{Guid.NewGuid():N}.raw");
        try
        {
            await RunAsync("qemu-img", ["convert", "-U", "-f", "qcow2", "-O", "raw", "-l", $"snapshot.name={snapshot}", image, raw]);
            return await CounterCheckAsync(raw);
        }
        finally
        {
            File.Delete(raw);
        }
    }

    /// <summary>Names in <c>qemu-img snapshot -l -U IMAGE</c>.</summary>
    public async Task<IReadOnlyList<string>> QemuImgSnapshotsAsync(string image)
    {
        var output = await RunAsync("qemu-img", ["snapshot", "-l", "-U", image]);
        return [.. output.Split('\n')
            .Select(line => SnapshotRow().Match(line))
            .Where(m => m.Success)
            .Select(m => m.Groups["tag"].Value)];
    }

    /// <summary>"orch: seq=N t=T" lines of the console log written after <paramref name="offset"/> bytes; <paramref name="booted"/> when the guest booted again.</summary>
    public IReadOnlyList<(long Seq, double Uptime)> ConsoleSeqsAfter(string vm, long offset, out bool booted)
    {
        using var stream = new FileStream(ConsolePath(vm), FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        stream.Seek(offset, SeekOrigin.Begin);
        using var reader = new StreamReader(stream);
        var text = reader.ReadToEnd();
        booted = text.Contains("orch: init start", StringComparison.Ordinal);
        return [.. SeqLine().Matches(text).Select(m => (
            long.Parse(m.Groups["seq"].Value, CultureInfo.InvariantCulture),
            double.Parse(m.Groups["t"].Value, CultureInfo.InvariantCulture)))];
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

    [GeneratedRegex(@"^\d+\s+(?<tag>\S+)\s")]
    private static partial Regex SnapshotRow();

    [GeneratedRegex(@"orch: seq=(?<seq>\d+) t=(?<t>[0-9.]+)")]
    private static partial Regex SeqLine();
}

public sealed record CounterReport(bool Consistent, long MaxSeq, string Json);
