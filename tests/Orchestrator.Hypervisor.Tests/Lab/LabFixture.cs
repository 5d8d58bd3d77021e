using System.Diagnostics;
using Orchestrator.Hypervisor.Libvirt;

namespace Orchestrator.Hypervisor.Tests.Lab;

/// <summary>
/// One lab host (tests/lab/host.sh: libvirtd + virtlogd in a private mount namespace) with the guests the driver
/// tests use, built with the lab scripts (tests/lab/README.md). Started once for the "lab" collection and torn down
/// after it. When the lab cannot start, initialisation throws and every test of the collection fails: these tests
/// never pass without a real libvirt + QEMU.
/// </summary>
/// <remarks>
/// Environment: LAB_DIR (default: &lt;repo&gt;/.lab), ORCH_LAB_SCRIPTS (default: &lt;repo&gt;/tests/lab),
/// ORCH_LAB_KEEP=1 keeps the host and its images after the run for inspection.
/// Guests: <see cref="BackupVm"/> (running; vda raw 64M + vdb qcow2 64M), <see cref="CheckpointVm"/> (running;
/// vda qcow2 64M), <see cref="OfflineVm"/> (defined, shut off; vda qcow2 64M).
/// </remarks>
public sealed class LabFixture : IAsyncLifetime
{
    public const string HostName = "hvt";
    public const string BackupVm = "hvt-backup";
    public const string CheckpointVm = "hvt-ckpt";
    public const string OfflineVm = "hvt-off";

    private static readonly TimeSpan ScriptTimeout = TimeSpan.FromMinutes(5);

    private LibvirtHypervisor? _hypervisor;

    public LabFixture()
    {
        var repo = FindRepoRoot();
        ScriptsDir = Environment.GetEnvironmentVariable("ORCH_LAB_SCRIPTS") is { Length: > 0 } s ? s : Path.Combine(repo, "tests", "lab");
        LabDir = Environment.GetEnvironmentVariable("LAB_DIR") is { Length: > 0 } d ? d : Path.Combine(repo, ".lab");
        HostDir = Path.Combine(LabDir, "hosts", HostName);
        WorkDir = Path.Combine(HostDir, "work");
    }

    public string ScriptsDir { get; }

    public string LabDir { get; }

    public string HostDir { get; }

    /// <summary>Scratch space on the lab host for overlays and backup copies.</summary>
    public string WorkDir { get; }

    public string Uri { get; private set; } = string.Empty;

    public LibvirtHypervisor Hypervisor => _hypervisor ?? throw new InvalidOperationException("the lab did not start");

    /// <summary>Milliseconds the guests wait between counter records.</summary>
    public int GuestIntervalMs { get; } = 100;

    public async Task InitializeAsync()
    {
        if (!File.Exists(Path.Combine(ScriptsDir, "host.sh")))
        {
            throw new InvalidOperationException($"lab scripts not found in {ScriptsDir}: the libvirt driver tests need tests/lab (set ORCH_LAB_SCRIPTS to use others)");
        }

        await RunScriptAsync("guest-build.sh");
        Uri = (await RunScriptAsync("host.sh", "start", HostName)).Trim().Split('\n')[^1].Trim();
        Directory.CreateDirectory(WorkDir);

        // Fresh guests every run: a crashed earlier run may have left one on an overlay.
        foreach (var vm in new[] { BackupVm, CheckpointVm, OfflineVm })
        {
            await RunScriptAsync("vm.sh", "delete", HostName, vm);
        }

        var interval = GuestIntervalMs.ToString(System.Globalization.CultureInfo.InvariantCulture);
        await RunScriptAsync("vm.sh", "create", HostName, BackupVm, "--disks", "raw:64M qcow2:64M", "--interval-ms", interval);
        await RunScriptAsync("vm.sh", "create", HostName, CheckpointVm, "--disks", "qcow2:64M", "--interval-ms", interval);
        await RunScriptAsync("vm.sh", "create", HostName, OfflineVm, "--disks", "qcow2:64M", "--no-start");
        await WaitForGuestAsync(BackupVm, 1);
        await WaitForGuestAsync(CheckpointVm, 1);
        _hypervisor = await LibvirtHypervisor.ConnectAsync(Uri);
    }

    public async Task DisposeAsync()
    {
        if (_hypervisor is not null)
        {
            await _hypervisor.DisposeAsync();
        }

        if (Environment.GetEnvironmentVariable("ORCH_LAB_KEEP") == "1" || !File.Exists(Path.Combine(ScriptsDir, "host.sh")))
        {
            return;
        }

        await RunScriptAsync("host.sh", "clean", HostName);
    }

    /// <summary>Restarts only libvirtd on the lab host (guests keep running) and reconnects <see cref="Hypervisor"/>.</summary>
    public async Task RestartLibvirtdAsync()
    {
        await RunScriptAsync("host.sh", "restart-libvirtd", HostName);
        var old = _hypervisor;
        _hypervisor = await LibvirtHypervisor.ConnectAsync(Uri);
        if (old is not null)
        {
            await old.DisposeAsync();
        }
    }

    /// <summary>Waits until the guest has written counter record <paramref name="seq"/>; returns the last seq seen.</summary>
    public async Task<long> WaitForGuestAsync(string vm, long seq, int timeoutSeconds = 240)
    {
        var output = await RunScriptAsync("vm.sh", "wait", HostName, vm, "--seq", seq.ToString(System.Globalization.CultureInfo.InvariantCulture), "--timeout", timeoutSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return long.Parse(output.Trim().Split('\n')[^1], System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>Runs tests/lab/counter-check on images of one guest; exit 0 means a consistent point-in-time set.</summary>
    public async Task<(bool Consistent, string Report)> CounterCheckAsync(params string[] images)
    {
        var (exit, stdout, stderr) = await RunAsync(Path.Combine(ScriptsDir, "counter-check"), images);
        if (exit is not (0 or 1))
        {
            throw new InvalidOperationException($"counter-check failed (exit {exit}): {stderr}");
        }

        return (exit == 0, stdout.Trim());
    }

    /// <summary>A new empty directory under <see cref="WorkDir"/>.</summary>
    public string NewWorkDir(string prefix)
    {
        var dir = Path.Combine(WorkDir, $"{prefix}-{Guid.NewGuid():N}"[..(prefix.Length + 9)]);
        Directory.CreateDirectory(dir);
        return dir;
    }

    public async Task<string> RunScriptAsync(string script, params string[] args)
    {
        var (exit, stdout, stderr) = await RunAsync(Path.Combine(ScriptsDir, script), args);
        if (exit != 0)
        {
            throw new InvalidOperationException($"lab: {script} {string.Join(' ', args)} failed (exit {exit}):\n{stderr}\n{stdout}");
        }

        return stdout;
    }

    private async Task<(int Exit, string Stdout, string Stderr)> RunAsync(string file, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(file)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        psi.Environment["LAB_DIR"] = LabDir;
        using var process = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {file}");
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(ScriptTimeout);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', psi.ArgumentList)} did not finish within {ScriptTimeout}");
        }

        return (process.ExitCode, await stdout, await stderr);
    }

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Orchestrator.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException($"Orchestrator.sln not found above {AppContext.BaseDirectory}");
    }
}

[CollectionDefinition(Name)]
public sealed class LabCollection : ICollectionFixture<LabFixture>
{
    public const string Name = "lab";
}
