using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Orchestrator.IntegrationTests.Infrastructure;

/// <summary>A counter-check verdict on one or more images (tests/lab/README.md).</summary>
public sealed record CounterReport(bool Consistent, long Valid, long Min, long Max, string Reason, string Json);

/// <summary>
/// One lab libvirt host (tests/lab/host.sh) and its guests (tests/lab/vm.sh), for tests that need real QEMU.
/// Starting throws when the lab cannot start, so such tests fail rather than pass without QEMU. Disposing always
/// stops the host (and removes its directory unless ORCH_LAB_KEEP=1). virsh and qemu-img are test scaffolding here.
/// </summary>
public sealed partial class LabHost(string name) : IAsyncDisposable
{
    private static readonly TimeSpan ScriptTimeout = TimeSpan.FromMinutes(5);
    private bool _started;

    public string Name { get; } = name;

    public string LabDir { get; } = Environment.GetEnvironmentVariable("LAB_DIR") is { Length: > 0 } d ? d : Path.Combine(Repo.Root, ".lab");

    public string Uri { get; private set; } = "";

    public string ImagesDir => Path.Combine(LabDir, "hosts", Name, "images");

    public async Task StartAsync()
    {
        await ScriptAsync("guest-build.sh");
        _started = true;
        Uri = (await ScriptAsync("host.sh", "start", Name)).Trim().Split('\n')[^1].Trim();
        if (!Uri.StartsWith("qemu+unix://", StringComparison.Ordinal))
        {
            throw new InvalidOperationException($"lab host {Name} did not print its URI: '{Uri}'");
        }
    }

    /// <summary>vm.sh create (after deleting a leftover of an earlier run). Disks like "qcow2:64M" or "raw:64M qcow2:64M".</summary>
    public async Task CreateVmAsync(string vm, string disks, int intervalMs, bool start = true)
    {
        await ScriptAsync("vm.sh", "delete", Name, vm);
        List<string> args = ["create", Name, vm, "--disks", disks, "--interval-ms", intervalMs.ToString(CultureInfo.InvariantCulture)];
        if (!start)
        {
            args.Add("--no-start");
        }

        await ScriptAsync("vm.sh", [.. args]);
    }

    public Task StartVmAsync(string vm) => ScriptAsync("vm.sh", "start", Name, vm);

    public Task DestroyVmAsync(string vm) => ScriptAsync("vm.sh", "destroy", Name, vm);

    /// <summary>Waits until the guest printed record <paramref name="seq"/> or later; returns the last seq printed.</summary>
    public async Task<long> WaitForSeqAsync(string vm, long seq, int timeoutSeconds = 240)
    {
        var output = await ScriptAsync("vm.sh", "wait", Name, vm, "--seq", seq.ToString(CultureInfo.InvariantCulture), "--timeout", timeoutSeconds.ToString(CultureInfo.InvariantCulture));
        return long.Parse(output.Trim().Split('\n')[^1], CultureInfo.InvariantCulture);
    }

    public string ConsolePath(string vm) => Path.Combine(LabDir, "hosts", Name, "console", vm + ".log");

    /// <summary>The image of a disk, as vm.sh names it: images/VM-vda.qcow2.</summary>
    public string DiskPath(string vm, string target, string format) => Path.Combine(ImagesDir, $"{vm}-{target}.{format}");

    /// <summary>counter-check on images; a read error fails the test.</summary>
    public async Task<CounterReport> CounterCheckAsync(params string[] images)
    {
        var result = await ProcessRunner.RunAsync(Path.Combine(Repo.Root, "tests", "lab", "counter-check"), images);
        if (result.ExitCode is not (0 or 1))
        {
            throw new InvalidOperationException("counter-check failed: " + ProcessRunner.Describe(result));
        }

        using var json = JsonDocument.Parse(result.StandardOutput);
        var root = json.RootElement;
        return new CounterReport(
            root.GetProperty("consistent").GetBoolean(),
            root.GetProperty("valid").GetInt64(),
            root.TryGetProperty("min", out var min) && min.ValueKind == JsonValueKind.Number ? min.GetInt64() : -1,
            root.TryGetProperty("max", out var max) && max.ValueKind == JsonValueKind.Number ? max.GetInt64() : -1,
            root.GetProperty("reason").GetString() ?? "",
            result.StandardOutput.Trim());
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
            await RunCheckedAsync("qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", "-l", $"snapshot.name={snapshot}", image, raw);
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
        var output = await RunCheckedAsync("qemu-img", "snapshot", "-l", "-U", image);
        return [.. output.Split('\n')
            .Select(line => SnapshotRow().Match(line))
            .Where(m => m.Success)
            .Select(m => m.Groups["tag"].Value)];
    }

    public Task<string> VirshAsync(params string[] args) => RunCheckedAsync("virsh", ["-c", Uri, .. args]);

    /// <summary>"running (booted)", "paused (user)", "shut off (destroyed)"... from virsh domstate --reason.</summary>
    public async Task<string> DomainStateAsync(string vm) => (await VirshAsync("domstate", vm, "--reason")).Trim();

    /// <summary>"orch: seq=N t=T" lines of the console log written after <paramref name="offset"/> bytes.</summary>
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

    public async ValueTask DisposeAsync()
    {
        if (!_started)
        {
            return;
        }

        var keep = Environment.GetEnvironmentVariable("ORCH_LAB_KEEP") == "1";
        await ScriptAsync("host.sh", keep ? "stop" : "clean", Name);
    }

    public async Task<string> ScriptAsync(string script, params string[] args)
    {
        var result = await ProcessRunner.RunAsync(
            "bash",
            [Path.Combine(Repo.Root, "tests", "lab", script), .. args],
            new Dictionary<string, string?> { ["LAB_DIR"] = LabDir },
            ScriptTimeout);
        if (result.ExitCode != 0)
        {
            throw new InvalidOperationException($"lab: {script} {string.Join(' ', args)} failed: {ProcessRunner.Describe(result)}");
        }

        return result.StandardOutput;
    }

    private static async Task<string> RunCheckedAsync(string program, params string[] args)
    {
        var result = await ProcessRunner.RunAsync(program, args);
        if (result.ExitCode != 0)
        {
            throw new InvalidOperationException($"{program} {string.Join(' ', args)}: {ProcessRunner.Describe(result)}");
        }

        return result.StandardOutput;
    }

    [GeneratedRegex(@"^\d+\s+(?<tag>\S+)\s")]
    private static partial Regex SnapshotRow();

    [GeneratedRegex(@"orch: seq=(?<seq>\d+) t=(?<t>[0-9.]+)")]
    private static partial Regex SeqLine();
}
