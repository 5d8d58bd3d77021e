using System.Diagnostics;
using System.Text.Json;
using Grpc.Core;
using Grpc.Net.Client;
using Orchestrator.Api.V1;
using Orchestrator.IntegrationTests.Infrastructure;

namespace Orchestrator.IntegrationTests.Backup;

/// <summary>
/// Faulty daemons and steps that cannot finish, on the real lab: libvirtd restarted or hung under a silo process, a
/// commit that can never complete, a silo killed during preflight.
/// </summary>
[Collection(DaemonFaultLabCollection.Name)]
public sealed class DaemonFaultLabTests(DaemonFaultLabFixture fixture) : IAsyncLifetime
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(5) };
    private readonly string _work = Path.Combine(Path.GetTempPath(), $"orchestrator-fault-{Guid.NewGuid():N}");
    private readonly string _clusterId = $"fault-{Guid.NewGuid():N}"[..16];
    private readonly List<string> _guests = [];

    private LabHost Lab => fixture.Lab;

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var vm in _guests)
        {
            await Lab.LabAsync("vm.sh", "delete", Lab.Name, vm);
        }

        if (Directory.Exists(_work))
        {
            Directory.Delete(_work, recursive: true);
        }
    }

    private async Task<SiloProcess> StartSiloAsync(string guest, string disks, IDictionary<string, string>? extra = null)
    {
        _guests.Add(guest);
        await Lab.CreateGuestAsync(guest, disks, 100);
        var silo = fixture.NewSilo(_work, _clusterId, extra);
        silo.Start();
        await silo.WaitReadyAsync(TimeSpan.FromMinutes(3));
        await GrpcClients.Fleet(silo.GrpcEndpoint).WaitForVmAsync($"{Lab.Name}/{guest}", TimeSpan.FromMinutes(2));
        return silo;
    }

    private static BackupService.BackupServiceClient Backups(SiloProcess silo) => new(GrpcChannel.ForAddress(silo.GrpcEndpoint));

    private int LibvirtdPid() => int.Parse(File.ReadAllText(Path.Combine(Lab.HostDir, "libvirtd.pid")).Trim(), System.Globalization.CultureInfo.InvariantCulture);

    private static async Task<string> ReadyAsync(SiloProcess silo)
    {
        try
        {
            using var response = await Http.GetAsync($"http://127.0.0.1:{silo.HttpPort}/health/ready");
            return await response.Content.ReadAsStringAsync();
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
        {
            return "no answer: " + e.Message;
        }
    }

    private static async Task WaitReadyStateAsync(SiloProcess silo, bool healthy, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        string last;
        // Unhealthy means the endpoint answered so (no answer at all is not what is asserted).
        while ((last = await ReadyAsync(silo)) != (healthy ? "Healthy" : "Unhealthy"))
        {
            Assert.True(DateTime.UtcNow < deadline, $"/health/ready still '{last}' after {timeout}");
            await Task.Delay(250);
        }
    }

    /// <summary>Starts a backup, waiting out a record the last sync left stale (preflight says so), and waits for its end.</summary>
    private static async Task<BackupRun> BackupAsync(SiloProcess silo, string vm, long bandwidth = 0)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(1);
        while (true)
        {
            try
            {
                var key = (await Backups(silo).StartBackupAsync(new StartBackupRequest { Vm = vm, BandwidthBytesPerSecond = bandwidth })).Run.Key;
                return await BackupLabFixture.WaitForRunAsync(Backups(silo), key);
            }
            catch (RpcException e) when (e.StatusCode is StatusCode.FailedPrecondition or StatusCode.Internal && DateTime.UtcNow < deadline)
            {
                await Task.Delay(1000);
            }
        }
    }

    [Fact]
    public async Task StartBackup_SiloKilledDuringPreflight_RestartReleasesTheLockAndABackupSucceeds()
    {
        const string Guest = "ft-pre";
        var vm = $"{Lab.Name}/{Guest}";
        await using var silo = await StartSiloAsync(Guest, "qcow2:32M", new Dictionary<string, string> { ["Orchestrator__Backup__KillAt"] = "Preflight" });
        await Assert.ThrowsAsync<RpcException>(async () => await Backups(silo).StartBackupAsync(new StartBackupRequest { Vm = vm }));
        Assert.Equal(137, await silo.WaitForExitAsync(TimeSpan.FromMinutes(1)));

        silo.Set("Orchestrator__Backup__KillAt", null);
        silo.Start();
        await silo.WaitReadyAsync(TimeSpan.FromMinutes(3));
        var run = await BackupAsync(silo, vm);

        Assert.True(run.Step == BackupStep.Completed, $"{run.Step}: {run.Error}\n{silo.Log}");
        Assert.DoesNotContain(".orch-", await Lab.VirshAsync("domblklist", Guest), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Backup_LibvirtdRestartedDuringCopy_RunCompletesAfterReconnect()
    {
        const string Guest = "ft-restart";
        var vm = $"{Lab.Name}/{Guest}";
        // A sparse disk copies its holes for free and the copy can end before the restart: this one holds 63 MiB of
        // data after the guest's counter ring (the first MiB stays zero for it), so the copy really moves 64 MiB.
        // Not named like the lab's own images, which vm.sh create deletes first.
        var image = Path.Combine(Lab.ImagesDir, $"filled-{Guest}.raw");
        Directory.CreateDirectory(Path.GetDirectoryName(image)!);
        await using (var file = File.Create(image))
        {
            file.SetLength(1 << 20);
            file.Position = 1 << 20;
            var block = new byte[1 << 20];
            for (var i = 1; i < 64; i++)
            {
                Random.Shared.NextBytes(block);
                await file.WriteAsync(block);
            }
        }

        await using var silo = await StartSiloAsync(Guest, image, new Dictionary<string, string>
        {
            ["Logging__LogLevel__Orchestrator.Hypervisor.Libvirt.LibvirtHypervisor"] = "Information",
        });

        // 64 MiB at 8 MiB/s: the copy takes about 8 s; libvirtd is restarted in the middle of it.
        var key = (await Backups(silo).StartBackupAsync(new StartBackupRequest { Vm = vm, BandwidthBytesPerSecond = 8L << 20 })).Run.Key;
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(1);
        // Under load the copy can end between two looks: the restart then falls in the commit, which needs libvirt all
        // the same. What matters is that the overlays exist and the run is not over.
        BackupStep step;
        while ((step = (await Backups(silo).GetBackupAsync(new GetBackupRequest { Key = key })).Run.Step) < BackupStep.Copying)
        {
            Assert.True(DateTime.UtcNow < deadline, "the run never reached Copying");
            await Task.Delay(100);
        }

        Assert.True(step is >= BackupStep.Copying and <= BackupStep.Cleaning, $"the run ended ({step}) before libvirtd could be restarted");

        var before = LibvirtdPid();
        await Lab.LabAsync("host.sh", "restart-libvirtd", Lab.Name);
        Assert.NotEqual(before, LibvirtdPid());

        var run = await BackupLabFixture.WaitForRunAsync(Backups(silo), key);

        Assert.True(run.Step == BackupStep.Completed, $"{run.Step}: {run.Error}\n{silo.Log}");
        // The console logger writes from its own queue: the line may follow the run's end by a moment.
        var logged = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        while (!silo.Log.Contains("Reconnected to", StringComparison.Ordinal) && DateTime.UtcNow < logged)
        {
            await Task.Delay(200);
        }

        Assert.Contains("Reconnected to", silo.Log, StringComparison.Ordinal);
        Assert.DoesNotContain(".orch-", await Lab.VirshAsync("domblklist", Guest), StringComparison.Ordinal);
        Assert.Empty(Lab.LeftoverOverlays());
        Assert.True((await Lab.CounterCheckAsync([.. run.Disks.Select(d => d.BackupPath)])).Consistent);
        await WaitReadyStateAsync(silo, healthy: true, TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task LibvirtdStopped_CallsFailWithinTheBoundReadyGoesUnhealthy_RecoversAfterContinue()
    {
        const string Guest = "ft-stop";
        var vm = $"{Lab.Name}/{Guest}";
        await using var silo = await StartSiloAsync(Guest, "qcow2:32M", new Dictionary<string, string> { ["Orchestrator__Host__CallTimeout"] = "00:00:05" });
        var pid = LibvirtdPid();
        Process.Start("kill", ["-STOP", pid.ToString(System.Globalization.CultureInfo.InvariantCulture)]).WaitForExit();
        try
        {
            // A call that needs libvirt (preflight reads the domain) fails within the 5 s bound, not never.
            var clock = Stopwatch.StartNew();
            var failed = await Assert.ThrowsAsync<RpcException>(async () => await Backups(silo).StartBackupAsync(new StartBackupRequest { Vm = vm }, deadline: DateTime.UtcNow.AddMinutes(2)));
            clock.Stop();
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"the call took {clock.Elapsed.TotalSeconds:F1} s");
            Assert.Contains("did not answer within 5 s", failed.Status.Detail, StringComparison.Ordinal);

            // Keepalive (3 s x 3) closes the dead connection: the silo says the hypervisor is unreachable.
            clock.Restart();
            await WaitReadyStateAsync(silo, healthy: false, TimeSpan.FromSeconds(45));
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"unhealthy only after {clock.Elapsed.TotalSeconds:F1} s");

            // The hung daemon was noticed (keepalive or the blocked call) and the connection closed. The console
            // logger writes from its own queue: the line may follow the health check's answer by a moment.
            var closeLogged = DateTime.UtcNow + TimeSpan.FromSeconds(15);
            while (!silo.Log.Contains("closed by libvirt", StringComparison.Ordinal) && DateTime.UtcNow < closeLogged)
            {
                await Task.Delay(200);
            }

            Assert.True(silo.Log.Contains("closed by libvirt", StringComparison.Ordinal), "no close logged:\n" + silo.Log[^Math.Min(silo.Log.Length, 6000)..]);
        }
        finally
        {
            Process.Start("kill", ["-CONT", pid.ToString(System.Globalization.CultureInfo.InvariantCulture)]).WaitForExit();
        }

        await WaitReadyStateAsync(silo, healthy: true, TimeSpan.FromSeconds(90));
        var run = await BackupAsync(silo, vm);
        Assert.True(run.Step == BackupStep.Completed, $"{run.Step}: {run.Error}\n{silo.Log}");
    }

    [Fact]
    public async Task Backup_CommitCannotComplete_FailsWithinTheBudgetWithTheVmOnItsOverlay()
    {
        const string Guest = "ft-commit";
        var vm = $"{Lab.Name}/{Guest}";
        await using var silo = await StartSiloAsync(Guest, "raw:64M", new Dictionary<string, string>
        {
            ["Orchestrator__Backup__FinishAttempts"] = "3",
            ["Orchestrator__Backup__FinishRetryDelay"] = "00:00:00.5",
        });
        var basePath = Lab.DiskPath(Guest, "vda", "raw");
        // The base must be made immutable while the copy runs (before the commit starts). A small copy can end
        // between two looks under load: such a run is let finish and another one is started (at most 3).
        string? key = null;
        for (var attempt = 1; key is null; attempt++)
        {
            Assert.True(attempt <= 3, "three runs went past Copying between two looks");
            var started = (await Backups(silo).StartBackupAsync(new StartBackupRequest { Vm = vm, BandwidthBytesPerSecond = 4L << 20 })).Run.Key;
            var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(1);
            while (true)
            {
                var step = (await Backups(silo).GetBackupAsync(new GetBackupRequest { Key = started })).Run.Step;
                if (step == BackupStep.Copying)
                {
                    key = started;
                    break;
                }

                if (step is BackupStep.Committing or BackupStep.Cleaning or BackupStep.Verifying or BackupStep.Completed or BackupStep.Failed)
                {
                    await BackupLabFixture.WaitForRunAsync(Backups(silo), started, TimeSpan.FromMinutes(2));
                    break;
                }

                Assert.True(DateTime.UtcNow < deadline, $"the run never reached Copying (at {step})");
                await Task.Delay(50);
            }
        }

        // The base may not be written any more: QEMU cannot reopen it read-write, so no commit can start.
        await ProcessRunner.RunAsync("chattr", ["+i", basePath]);
        BackupRun run;
        var clock = Stopwatch.StartNew();
        try
        {
            run = await BackupLabFixture.WaitForRunAsync(Backups(silo), key, TimeSpan.FromMinutes(2));
        }
        finally
        {
            await ProcessRunner.RunAsync("chattr", ["-i", basePath]);
        }

        Assert.True(run.Step == BackupStep.Failed, $"{run.Step}: {run.Error}\n{silo.Log}");
        Assert.Contains("gave up after 3 tries", run.Error, StringComparison.Ordinal);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), $"took {clock.Elapsed.TotalSeconds:F0} s");

        // Safe: the guest still runs, on the overlay (a valid chain over its base), and keeps writing.
        Assert.Equal("running", (await Lab.VirshAsync("domstate", Guest)).Trim());
        Assert.Contains(".orch-", await Lab.VirshAsync("domblklist", Guest), StringComparison.Ordinal);
        var seq = await Lab.WaitForSeqAsync(Guest, 1);
        await Lab.WaitForSeqAsync(Guest, seq + 5, 120);

        // Reported: fleet overlays lists the disk once the inventory has seen it.
        var fleet = GrpcClients.Fleet(silo.GrpcEndpoint);
        var listed = DateTime.UtcNow + TimeSpan.FromMinutes(1);
        while (!(await fleet.ListOverlaysAsync(new ListOverlaysRequest())).Disks.Any(d => d.Vm == Guest && d.OrchestratorOverlay))
        {
            Assert.True(DateTime.UtcNow < listed, "fleet overlays does not list the overlay left in place");
            await Task.Delay(500);
        }

        // The cause is fixed (the base is writable again): the real CLI commits the overlay back, first as a dry run.
        var overlay = run.Disks.Single().OverlayPath;
        var dry = await ProcessRunner.RunAsync("dotnet", [Repo.CliDll, "backup", "repair", vm, "--dry-run", "--format", "json", "--endpoint", silo.GrpcEndpoint], timeout: TimeSpan.FromMinutes(2));
        Assert.True(dry.ExitCode == 0, ProcessRunner.Describe(dry));
        using (var planned = JsonDocument.Parse(dry.StandardOutput))
        {
            var disk = Assert.Single(planned.RootElement.GetProperty("disks").EnumerateArray());
            Assert.Equal(("would_commit", overlay, basePath), (disk.GetProperty("action").GetString(), disk.GetProperty("overlay_path").GetString(), disk.GetProperty("base_path").GetString()));
        }

        Assert.Contains(overlay, await Lab.VirshAsync("domblklist", Guest), StringComparison.Ordinal);
        var repair = await ProcessRunner.RunAsync("dotnet", [Repo.CliDll, "backup", "repair", vm, "--format", "json", "--endpoint", silo.GrpcEndpoint], timeout: TimeSpan.FromMinutes(3));
        Assert.True(repair.ExitCode == 0, ProcessRunner.Describe(repair) + silo.Log);
        using (var done = JsonDocument.Parse(repair.StandardOutput))
        {
            Assert.Equal("committed", Assert.Single(done.RootElement.GetProperty("disks").EnumerateArray()).GetProperty("action").GetString());
        }

        // Back on its own image, the overlay file gone, the guest still counting onto its base.
        Assert.DoesNotContain(".orch-", await Lab.VirshAsync("domblklist", Guest), StringComparison.Ordinal);
        Assert.Contains(basePath, await Lab.VirshAsync("domblklist", Guest), StringComparison.Ordinal);
        Assert.Empty(Lab.LeftoverOverlays());
        seq = await Lab.WaitForSeqAsync(Guest, 1);
        await Lab.WaitForSeqAsync(Guest, seq + 5, 120);
        var again = await BackupAsync(silo, vm);
        Assert.True(again.Step == BackupStep.Completed, $"{again.Step}: {again.Error}\n{silo.Log}");
    }
}
