using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Orchestrator.IntegrationTests.Infrastructure;

namespace Orchestrator.IntegrationTests.Deploy;

/// <summary>deploy/systemd/install.sh run once into a temporary root (the built silo as the published one).</summary>
public sealed class InstalledSiloFixture : IAsyncLifetime
{
    public const string HostName = "kvm-test";
    public const string BackupRoot = "/srv/backups";

    public string Root { get; } = Path.Combine(Path.GetTempPath(), $"orchestrator-install-{Guid.NewGuid():N}");

    public ProcessResult Install { get; private set; } = null!;

    public static string SiloDir => Path.GetDirectoryName(Repo.SiloDll)!;

    public string At(string path) => Path.Combine(Root, path.TrimStart('/'));

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(Root);
        Install = await RunInstallAsync(Root, "--host-name", HostName, "--backup-root", BackupRoot);
    }

    public static Task<ProcessResult> RunInstallAsync(string root, params string[] options) =>
        ProcessRunner.RunAsync("bash", [Repo.Script("deploy/systemd/install.sh"), "--root", root, "--silo-dir", SiloDir, .. options], timeout: TimeSpan.FromMinutes(2));

    public Task DisposeAsync()
    {
        Directory.Delete(Root, recursive: true);
        return Task.CompletedTask;
    }
}

[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class SystemdServiceTests(InstalledSiloFixture fixture) : IClassFixture<InstalledSiloFixture>
{
    private const string Unit = "etc/systemd/system/orchestrator-silo.service";

    [Fact]
    public async Task Unit_PassesSystemdAnalyzeVerify_WithItsDropInAndInstalledSilo()
    {
        Assert.True(fixture.Install.ExitCode == 0, ProcessRunner.Describe(fixture.Install));
        var analyze = await OpsTools.RequireAsync("systemd-analyze");

        // verify resolves the unit's dependencies (multi-user.target, sysinit.target, ...) under --root: give the
        // temporary root the system's own unit directory, read-only copies.
        var systemUnits = new[] { "/usr/lib/systemd/system", "/lib/systemd/system" }.First(Directory.Exists);
        var copy = fixture.At("usr/lib/systemd/system");
        if (!Directory.Exists(copy))
        {
            Directory.CreateDirectory(fixture.At("usr/lib/systemd"));
            var cp = await ProcessRunner.RunAsync("cp", ["-a", systemUnits, fixture.At("usr/lib/systemd/")]);
            Assert.True(cp.ExitCode == 0, ProcessRunner.Describe(cp));
        }

        var verify = await ProcessRunner.RunAsync(analyze, ["verify", $"--root={fixture.Root}", "orchestrator-silo.service"]);

        // Exit 0 alone is not enough: an unknown key or a bad value is only a warning on stderr.
        Assert.True(verify.ExitCode == 0 && verify.StandardError.Trim().Length == 0, ProcessRunner.Describe(verify));

        // And verify does catch a broken unit: the same tree with the silo's executable gone.
        var exe = fixture.At("opt/orchestrator/silo/Orchestrator.Silo");
        File.Move(exe, exe + ".away");
        try
        {
            var broken = await ProcessRunner.RunAsync(analyze, ["verify", $"--root={fixture.Root}", "orchestrator-silo.service"]);
            Assert.NotEqual(0, broken.ExitCode);
            Assert.Contains("Orchestrator.Silo", broken.StandardError, StringComparison.Ordinal);
        }
        finally
        {
            File.Move(exe + ".away", exe);
        }
    }

    [Fact]
    public void Install_ProducesTheExpectedTree()
    {
        Assert.True(fixture.Install.ExitCode == 0, ProcessRunner.Describe(fixture.Install));
        Assert.Contains("Next steps:", fixture.Install.StandardOutput, StringComparison.Ordinal);

        AssertMode("opt/orchestrator/silo/Orchestrator.Silo", "755");
        Assert.True(File.Exists(fixture.At("opt/orchestrator/silo/Orchestrator.Silo.dll")));
        Assert.Empty(Directory.GetFiles(fixture.At("opt/orchestrator/silo"), "*.pdb", SearchOption.AllDirectories));
        Assert.True(File.Exists(fixture.At("opt/orchestrator/README.md")));

        Assert.Equal(File.ReadAllText(Repo.Script("deploy/systemd/orchestrator-silo.service")), File.ReadAllText(fixture.At(Unit)));
        AssertMode(Unit, "644");
        var dropIn = File.ReadAllLines(fixture.At("etc/systemd/system/orchestrator-silo.service.d/10-install.conf"));
        Assert.Contains("User=root", dropIn);
        Assert.Contains("Group=root", dropIn);
        Assert.Contains($"ReadWritePaths={InstalledSiloFixture.BackupRoot}", dropIn);

        var env = File.ReadAllLines(fixture.At("etc/orchestrator/orchestrator.env"));
        AssertMode("etc/orchestrator/orchestrator.env", "640");
        Assert.Contains($"Orchestrator__Host__Name={InstalledSiloFixture.HostName}", env);
        Assert.Contains("Orchestrator__Host__Uri=qemu:///system", env);
        Assert.Contains($"Orchestrator__Backup__Roots__0={InstalledSiloFixture.BackupRoot}", env);
        Assert.Contains($"Orchestrator__Backup__DefaultTarget={InstalledSiloFixture.BackupRoot}", env);
        Assert.Contains(env, l => l.StartsWith("DOTNET_ROOT=/", StringComparison.Ordinal));

        AssertMode("etc/orchestrator", "750");
        AssertMode("etc/orchestrator/tls", "750");
        AssertMode("var/lib/orchestrator", "750");
        AssertMode(InstalledSiloFixture.BackupRoot, "750");

        // Every path the unit names is in the tree (ExecStart, EnvironmentFile, WorkingDirectory, ReadWritePaths but
        // the images directory, which libvirt makes).
        var unit = File.ReadAllLines(fixture.At(Unit));
        Assert.Contains("ExecStart=/opt/orchestrator/silo/Orchestrator.Silo", unit);
        Assert.Contains("EnvironmentFile=/etc/orchestrator/orchestrator.env", unit);
        Assert.Contains("Type=notify", unit);
        Assert.True(Directory.Exists(fixture.At("var/lib/orchestrator")));
    }

    [Fact]
    public async Task Install_Again_KeepsTheEnvFileAndReplacesTheSilo()
    {
        var root = Path.Combine(Path.GetTempPath(), $"orchestrator-reinstall-{Guid.NewGuid():N}");
        try
        {
            var first = await InstalledSiloFixture.RunInstallAsync(root, "--host-name", "kvm-one");
            Assert.True(first.ExitCode == 0, ProcessRunner.Describe(first));
            var envPath = Path.Combine(root, "etc/orchestrator/orchestrator.env");
            await File.AppendAllTextAsync(envPath, "Orchestrator__Backup__HistoryLimit=7\n");
            var stale = Path.Combine(root, "opt/orchestrator/silo/left-from-an-old-version.dll");
            await File.WriteAllTextAsync(stale, "old");

            var second = await InstalledSiloFixture.RunInstallAsync(root, "--host-name", "kvm-two");

            Assert.True(second.ExitCode == 0, ProcessRunner.Describe(second));
            Assert.Contains("kept", second.StandardOutput, StringComparison.Ordinal);
            var env = await File.ReadAllLinesAsync(envPath);
            Assert.Contains("Orchestrator__Host__Name=kvm-one", env);
            Assert.Contains("Orchestrator__Backup__HistoryLimit=7", env);
            Assert.False(File.Exists(stale), "a file of the previous silo was left in place");
            Assert.True(File.Exists(Path.Combine(root, "opt/orchestrator/silo/Orchestrator.Silo.dll")));
            Assert.False(Directory.Exists(Path.Combine(root, "opt/orchestrator/silo.old")));
            Assert.DoesNotContain("ReadWritePaths", await File.ReadAllTextAsync(Path.Combine(root, "etc/systemd/system/orchestrator-silo.service.d/10-install.conf")), StringComparison.Ordinal);
        }
        finally
        {
            if (Directory.Exists(root))
            {
                Directory.Delete(root, recursive: true);
            }
        }
    }

    [Theory]
    [InlineData("--user", "no-such-user-0rch", "--user")]
    [InlineData("--backup-root", "relative/backups", "--backup-root")]
    [InlineData("--host-name", "bad name", "--host-name")]
    [InlineData("--silo-dir", "/nonexistent/silo", "--silo-dir")]
    [InlineData("--frobnicate", "x", "--frobnicate")]
    public async Task Install_BadOption_ExitsTwoNamingIt(string option, string value, string named)
    {
        var root = Path.Combine(Path.GetTempPath(), $"orchestrator-badinstall-{Guid.NewGuid():N}");
        try
        {
            // --silo-dir given last wins over the fixture's, so the bad one is the one checked.
            var result = await ProcessRunner.RunAsync("bash", [Repo.Script("deploy/systemd/install.sh"), "--root", root, "--silo-dir", InstalledSiloFixture.SiloDir, option, value]);

            Assert.True(result.ExitCode == 2, ProcessRunner.Describe(result));
            Assert.Contains(named, result.StandardError, StringComparison.Ordinal);
            Assert.False(File.Exists(Path.Combine(root, Unit)), "a refused install wrote the unit");
        }
        finally
        {
            if (Directory.Exists(root))
            {
                Directory.Delete(root, recursive: true);
            }
        }
    }

    [Fact]
    public async Task InstalledSilo_SendsReadyWhenUp_AndStoppingOnSigterm()
    {
        Assert.True(fixture.Install.ExitCode == 0, ProcessRunner.Describe(fixture.Install));
        var work = Path.Combine(Path.GetTempPath(), $"orchestrator-notify-{Guid.NewGuid():N}");
        Directory.CreateDirectory(work);
        var socketPath = Path.Combine(work, "notify.sock");
        using var socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        socket.Bind(new UnixDomainSocketEndPoint(socketPath));

        // The unit's own Environment= (paths moved into the temporary root) and its env file, as systemd passes them.
        var environment = new Dictionary<string, string>();
        foreach (var line in File.ReadAllLines(fixture.At(Unit)).Where(l => l.StartsWith("Environment=", StringComparison.Ordinal)))
        {
            foreach (var pair in line["Environment=".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries))
            {
                var (key, value) = (pair[..pair.IndexOf('=', StringComparison.Ordinal)], pair[(pair.IndexOf('=', StringComparison.Ordinal) + 1)..]);
                environment[key] = value.StartsWith('/') ? fixture.At(value) : value;
            }
        }

        foreach (var (key, value) in ReadEnvFile(fixture.At("etc/orchestrator/orchestrator.env")))
        {
            environment[key] = value;
        }

        // Then what this machine needs instead: a simulated host (no libvirtd here), files in the test's directory, free ports.
        var httpPort = Repo.FreePort();
        environment["Orchestrator__Host__Uri"] = $"simulated://{InstalledSiloFixture.HostName}";
        environment["Orchestrator__Persistence__SqlitePath"] = Path.Combine(work, "orchestrator.db");
        environment["Orchestrator__Backup__Roots__0"] = fixture.At(InstalledSiloFixture.BackupRoot);
        environment["Orchestrator__Backup__DefaultTarget"] = fixture.At(InstalledSiloFixture.BackupRoot);
        environment["Orchestrator__Endpoints__GrpcPort"] = Repo.FreePort().ToString(CultureInfo.InvariantCulture);
        environment["Orchestrator__Endpoints__HttpPort"] = httpPort.ToString(CultureInfo.InvariantCulture);
        environment["Orchestrator__Cluster__SiloPort"] = Repo.FreePort().ToString(CultureInfo.InvariantCulture);
        environment["NOTIFY_SOCKET"] = socketPath;

        var info = new ProcessStartInfo(fixture.At("opt/orchestrator/silo/Orchestrator.Silo"))
        {
            WorkingDirectory = fixture.At("var/lib/orchestrator"),
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var (key, value) in environment)
        {
            info.Environment[key] = value;
        }

        var log = new StringBuilder();
        using var silo = Process.Start(info)!;
        silo.OutputDataReceived += (_, e) => { lock (log) { log.AppendLine(e.Data); } };
        silo.ErrorDataReceived += (_, e) => { lock (log) { log.AppendLine(e.Data); } };
        silo.BeginOutputReadLine();
        silo.BeginErrorReadLine();
        try
        {
            var started = Stopwatch.StartNew();
            // Within the unit's TimeoutStartSec less a margin: a silo starts in seconds, but on a loaded machine in up to a minute.
            var ready = await ReceiveUntilAsync(socket, "READY=1", TimeSpan.FromSeconds(120), silo, log);
            var readyAfter = started.Elapsed;

            // READY=1 means up: the silo answers ready at once, no polling.
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
            Assert.Equal("Healthy", await http.GetStringAsync($"http://127.0.0.1:{httpPort}/health/ready"));
            Assert.Contains("READY=1", ready, StringComparison.Ordinal);

            var stopping = Stopwatch.StartNew();
            var kill = await ProcessRunner.RunAsync("kill", ["-TERM", silo.Id.ToString(CultureInfo.InvariantCulture)]);
            Assert.True(kill.ExitCode == 0, ProcessRunner.Describe(kill));
            await ReceiveUntilAsync(socket, "STOPPING=1", TimeSpan.FromSeconds(30), silo, log);
            using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60)))
            {
                await silo.WaitForExitAsync(cts.Token);
            }

            var stoppedAfter = stopping.Elapsed;
            Assert.True(silo.ExitCode == 0, $"exit {silo.ExitCode}:\n{log}");
            var timeoutStop = TimeoutStopSec(File.ReadAllLines(fixture.At(Unit)));
            Assert.True(stoppedAfter < timeoutStop / 4, $"a graceful stop took {stoppedAfter}, too close to TimeoutStopSec={timeoutStop}");
            Console.WriteLine($"READY=1 after {readyAfter.TotalSeconds:F1} s; stopped {stoppedAfter.TotalSeconds:F1} s after SIGTERM");
        }
        finally
        {
            if (!silo.HasExited)
            {
                silo.Kill(entireProcessTree: true);
            }

            Directory.Delete(work, recursive: true);
        }
    }

    private static async Task<string> ReceiveUntilAsync(Socket socket, string wanted, TimeSpan timeout, Process silo, StringBuilder log)
    {
        var buffer = new byte[4096];
        var seen = new StringBuilder();
        using var cts = new CancellationTokenSource(timeout);
        while (true)
        {
            int n;
            try
            {
                n = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
            }
            catch (OperationCanceledException)
            {
                lock (log)
                {
                    throw new TimeoutException($"no {wanted} within {timeout} (received: '{seen}'; silo exited: {silo.HasExited}):\n{log}");
                }
            }

            var message = Encoding.UTF8.GetString(buffer, 0, n);
            seen.Append(message).Append('|');
            if (message.Split('\n').Contains(wanted))
            {
                return message;
            }
        }
    }

    private static Dictionary<string, string> ReadEnvFile(string path)
    {
        var result = new Dictionary<string, string>();
        foreach (var raw in File.ReadAllLines(path))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#'))
            {
                continue;
            }

            var eq = line.IndexOf('=', StringComparison.Ordinal);
            Assert.True(eq > 0, $"{path}: not KEY=VALUE: {line}");
            result[line[..eq]] = line[(eq + 1)..];
        }

        return result;
    }

    private static TimeSpan TimeoutStopSec(string[] unit)
    {
        var line = Assert.Single(unit, l => l.StartsWith("TimeoutStopSec=", StringComparison.Ordinal));
        return TimeSpan.FromSeconds(int.Parse(line["TimeoutStopSec=".Length..], CultureInfo.InvariantCulture));
    }

    private void AssertMode(string path, string octal)
    {
        var full = fixture.At(path);
        var mode = File.GetUnixFileMode(full) & (UnixFileMode)0x1FF;
        Assert.True(Convert.ToString((int)mode, 8) == octal, $"{path}: mode {Convert.ToString((int)mode, 8)}, expected {octal}");
    }
}
