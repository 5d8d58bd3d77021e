using System.Diagnostics;
using System.Text.Json;
using Grpc.Net.Client;
using Orchestrator.Api.V1;
using Orchestrator.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace Orchestrator.IntegrationTests.Backup;

/// <summary>
/// Restore on any host, on the real lab: two libvirt hosts (ra, rb) and their silo processes on PostgreSQL share one
/// backup root. A counter guest on ra is backed up, ra's silo is killed, and the real CLI restores the set on rb with
/// --define --start: the copy boots on rb and counts on from the backup point, on rb's files only.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class RestoreAnyHostLabTests(PostgresFixture postgres, ITestOutputHelper output)
{
    private const string Guest = "rs-ctr";
    private const string Copy = "rs-ctr-b";

    [Fact]
    public async Task Restore_SourceHostSiloDown_DefinedAndStartedOnAnotherHostCountingOnFromTheBackup()
    {
        var work = Path.Combine(Path.GetTempPath(), $"orchestrator-restore-{Guid.NewGuid():N}");
        var backupRoot = Path.Combine(work, "backups");
        var clusterId = $"rs-{Guid.NewGuid():N}"[..16];
        await using var a = new LabHost("ra");
        await using var b = new LabHost("rb");
        SiloProcess? siloA = null;
        SiloProcess? siloB = null;
        var sw = Stopwatch.StartNew();
        try
        {
            await Task.WhenAll(a.InitializeAsync(), b.InitializeAsync());
            Directory.CreateDirectory(backupRoot);
            Directory.CreateDirectory(b.ImagesDir); // rb's restore root: where sets of other hosts restore to

            // The small counter guest, writing every 100 ms (two silos and two guests share two cores).
            await a.CreateGuestAsync(Guest, "raw:16M", intervalMs: 100);
            SiloProcess Silo(LabHost lab) => new(lab.Name, Path.Combine(work, lab.Name), new Dictionary<string, string>
            {
                ["Orchestrator__Persistence__Mode"] = "Cluster",
                ["Orchestrator__Persistence__PostgresConnectionString"] = postgres.ConnectionString,
                ["Orchestrator__Cluster__ClusterId"] = clusterId,
                ["Orchestrator__Cluster__ServiceId"] = clusterId,
                ["Orchestrator__Host__Uri"] = lab.Uri,
                ["Orchestrator__Host__SeedDemo"] = "false",
                ["Orchestrator__Backup__Roots__0"] = backupRoot,
                ["Orchestrator__Backup__DefaultTarget"] = Path.Combine(backupRoot, lab.Name),
                ["Orchestrator__Backup__RestoreRoots__0"] = lab.ImagesDir,
                ["Logging__LogLevel__Orchestrator"] = "Information",
            });
            siloA = Silo(a);
            siloB = Silo(b);

            // ra keeps 1 TiB free for itself: it never qualifies for a test restore chosen by capacity, so rb is chosen.
            siloA.Set("Orchestrator__Backup__TestRestoreMemoryReserveMiB", "1048576");
            siloA.Start();
            siloB.Start();
            await Task.WhenAll(siloA.WaitReadyAsync(TimeSpan.FromMinutes(3)), siloB.WaitReadyAsync(TimeSpan.FromMinutes(3)));
            await GrpcClients.Fleet(siloA.GrpcEndpoint).WaitForVmAsync($"{a.Name}/{Guest}", TimeSpan.FromMinutes(2));
            output.WriteLine($"{sw.Elapsed.TotalSeconds:0.0} s: two hosts, two silos, the guest counting");

            var backups = new BackupService.BackupServiceClient(GrpcChannel.ForAddress(siloA.GrpcEndpoint));
            var run = await BackupLabFixture.WaitForRunAsync(backups, (await backups.StartBackupAsync(new StartBackupRequest { Vm = $"{a.Name}/{Guest}" })).Run.Key);
            Assert.True(run.Step == BackupStep.Completed, run.Error);
            var atBackup = await a.CounterCheckAsync(run.Disks[0].BackupPath);
            Assert.True(atBackup.Consistent && atBackup.MaxSeq > 0, atBackup.Json);
            output.WriteLine($"{sw.Elapsed.TotalSeconds:0.0} s: backed up {run.Key} at seq {atBackup.MaxSeq}");

            // Test restores of ra's set on rb: one that passes, one whose host's silo is killed while it boots.
            siloB = await TestRestoresOnOtherHostAsync(a, b, siloA, siloB, run.Key, sw);

            // Host ra's silo is gone; its libvirt and the original guest stay (a silo crash, not a power cut).
            // The restore does not need ra's silo; it waits only until the cluster has declared it dead (its grain
            // directory partition moves to rb), as a real disaster recovery would find it.
            await siloA.KillAsync();
            var killed = Stopwatch.StartNew();
            var fleetB = GrpcClients.Fleet(siloB.GrpcEndpoint);
            while (await OnlineAsync(fleetB, a.Name))
            {
                Assert.True(killed.Elapsed < TimeSpan.FromMinutes(2), $"{a.Name}'s silo was not declared dead in 2 min");
                await Task.Delay(500);
            }

            output.WriteLine($"{sw.Elapsed.TotalSeconds:0.0} s: {a.Name}'s silo killed, declared dead after {killed.Elapsed.TotalSeconds:0.0} s");
            var restoreClock = Stopwatch.StartNew();
            var cli = await ProcessRunner.RunAsync(
                "dotnet",
                [Repo.CliDll, "restore", run.Key, "--as", Copy, "--host", b.Name, "--define", "--start", "--format", "json", "--endpoint", siloB.GrpcEndpoint],
                timeout: TimeSpan.FromMinutes(3));
            var restoreSeconds = restoreClock.Elapsed.TotalSeconds;
            Assert.True(cli.ExitCode == 0, ProcessRunner.Describe(cli) + siloB.Log);
            output.WriteLine($"{sw.Elapsed.TotalSeconds:0.0} s: restored on {b.Name} through the CLI in {restoreSeconds:0.00} s (CLI process included)\n{cli.StandardOutput}");
            output.WriteLine(string.Join('\n', siloB.Log.Split('\n').Where(l => l.Contains("Restore of", StringComparison.Ordinal))));
            using var json = JsonDocument.Parse(cli.StandardOutput);
            var restored = json.RootElement;
            Assert.Equal(b.Name, restored.GetProperty("host").GetString());
            Assert.True(restored.GetProperty("defined").GetBoolean());
            Assert.True(restored.GetProperty("started").GetBoolean());
            var images = restored.GetProperty("images").EnumerateArray().Select(i => i.GetString()!).ToList();
            Assert.Equal([Path.Combine(b.ImagesDir, $"{Copy}-vda.raw")], images);

            // The copy boots on rb and resumes right after the last record in the backup.
            var console = Path.Combine(b.ImagesDir, $"{Copy}.log");
            Assert.Contains($"serial 0: file '{a.ConsolePath(Guest)}' -> '{console}'", restored.GetProperty("changes").EnumerateArray().Select(c => c.GetString()));
            var resumedAt = await WaitForStartSeqAsync(console, TimeSpan.FromMinutes(3));
            var bootSeconds = restoreClock.Elapsed.TotalSeconds;
            Assert.Equal(atBackup.MaxSeq + 1, resumedAt);
            await WaitForConsoleSeqAsync(console, resumedAt + 10, TimeSpan.FromMinutes(2));
            output.WriteLine($"{sw.Elapsed.TotalSeconds:0.0} s: the copy counts on rb from seq {resumedAt} (backup at {atBackup.MaxSeq}); restore + boot to the first record {bootSeconds:0.0} s");
            Assert.StartsWith("running", await b.DomainStateAsync(Copy), StringComparison.Ordinal);

            // Nothing of ra's VM: every path in the copy's definition is rb's (or the lab's shared guest kernel).
            var xml = await b.VirshAsync("dumpxml", Copy);
            Assert.DoesNotContain(a.HostDir, xml, StringComparison.Ordinal);
            Assert.DoesNotContain(Copy, (await a.VirshAsync("list", "--all", "--name")).Split('\n').Select(l => l.Trim()));
            Assert.Equal($"{Path.Combine(b.ImagesDir, $"{Copy}-vda.raw")}", (await b.VirshAsync("domblklist", Copy)).Split('\n').Select(l => l.Trim()).Single(l => l.StartsWith("vda", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
            Assert.StartsWith("running", await a.DomainStateAsync(Guest), StringComparison.Ordinal);

            // The dead host as a target: UNAVAILABLE (exit 4) naming it.
            var toDead = await ProcessRunner.RunAsync("dotnet", [Repo.CliDll, "restore", run.Key, "--as", "rs-ctr-a", "--host", a.Name, "--endpoint", siloB.GrpcEndpoint], timeout: TimeSpan.FromMinutes(2));
            Assert.True(toDead.ExitCode == 4, ProcessRunner.Describe(toDead));
            Assert.Contains($"'{a.Name}'", toDead.StandardError, StringComparison.Ordinal);
            output.WriteLine($"{sw.Elapsed.TotalSeconds:0.0} s: restore onto the dead host: {toDead.StandardError.Trim()}");
        }
        catch
        {
            output.WriteLine($"{sw.Elapsed.TotalSeconds:0.0} s: failed\n--- silo {a.Name}:\n{siloA?.Log}\n--- silo {b.Name}:\n{siloB?.Log}");
            throw;
        }
        finally
        {
            if (siloB is not null)
            {
                await siloB.DisposeAsync();
            }

            if (siloA is not null)
            {
                await siloA.DisposeAsync();
            }

            // The copy's images live in rb's lab directory: they go with the host.
            if (Directory.Exists(work))
            {
                Directory.Delete(work, recursive: true);
            }
        }
    }

    /// <summary>
    /// (a) `backup test` (no --host) of a set made on ra, whose silo keeps more memory free than the machine has: rb is
    /// chosen by capacity, the set restored into rb's restore root, booted there (console probe on the counter's lines),
    /// passed, and nothing of it left on either host. (b) The same with a probe that never
    /// answers, rb's silo SIGKILLed once the throwaway runs: the restarted silo destroys, undefines and deletes it, and
    /// the VM on ra records the test failed, "interrupted". Returns rb's silo (running again).
    /// </summary>
    private async Task<SiloProcess> TestRestoresOnOtherHostAsync(LabHost a, LabHost b, SiloProcess siloA, SiloProcess siloB, string runKey, Stopwatch sw)
    {
        var clock = Stopwatch.StartNew();
        var good = await ProcessRunner.RunAsync(
            "dotnet",
            [Repo.CliDll, "backup", "test", runKey, "--probe", "console:orch: seq=[0-9]+ t=", "--timeout", "240", "--format", "json", "--endpoint", siloA.GrpcEndpoint],
            timeout: TimeSpan.FromMinutes(6));
        Assert.True(good.ExitCode == 0, ProcessRunner.Describe(good) + siloB.Log);
        var test = JsonDocument.Parse(good.StandardOutput).RootElement;
        Assert.Equal(("passed", b.Name), (test.GetProperty("outcome").GetString(), test.GetProperty("host").GetString()));
        Assert.True(test.GetProperty("cleaned_up").GetBoolean(), good.StandardOutput);
        await AssertNoThrowawayAsync(b);
        await AssertNoThrowawayAsync(a);
        output.WriteLine($"{sw.Elapsed.TotalSeconds:0.0} s: test restore of {runKey} chosen on {b.Name}, passed in {clock.Elapsed.TotalSeconds:0.0} s through the CLI (restore {test.GetProperty("restore_seconds").GetDouble():0.00} s, start to console line {test.GetProperty("boot_seconds").GetDouble():0.0} s); nothing left on either host");

        // (b) --host rb, a probe that never answers: the throwaway boots until rb's silo is killed.
        clock.Restart();
        var started = await ProcessRunner.RunAsync(
            "dotnet",
            [Repo.CliDll, "backup", "test", runKey, "--host", b.Name, "--probe", "console:never printed", "--timeout", "600", "--no-wait", "--format", "json", "--endpoint", siloA.GrpcEndpoint],
            timeout: TimeSpan.FromMinutes(2));
        Assert.True(started.ExitCode is 0 or 7, ProcessRunner.Describe(started));
        var running = JsonDocument.Parse(started.StandardOutput).RootElement;
        var (id, domain) = (running.GetProperty("id").GetString()!, running.GetProperty("domain").GetString()!);
        // Listed as soon as QEMU is launched ("paused (starting up)"); the kill comes once the guest runs (booting).
        while (!(await b.VirshAsync("list", "--name")).Split('\n', StringSplitOptions.TrimEntries).Contains(domain)
            || !(await b.DomainStateAsync(domain)).StartsWith("running", StringComparison.Ordinal))
        {
            Assert.True(clock.Elapsed < TimeSpan.FromMinutes(3), $"{domain} did not start on {b.Name}\n{siloB.Log}");
            await Task.Delay(200);
        }

        await siloB.KillAsync();
        output.WriteLine($"{sw.Elapsed.TotalSeconds:0.0} s: {b.Name}'s silo killed {clock.Elapsed.TotalSeconds:0.0} s after the start, {domain} running");
        Assert.StartsWith("running", await b.DomainStateAsync(domain), StringComparison.Ordinal);
        Assert.NotEmpty(Directory.EnumerateFiles(b.ImagesDir, "orch-test-*"));

        var restarted = Stopwatch.StartNew();
        siloB.Start();
        await siloB.WaitReadyAsync(TimeSpan.FromMinutes(3));
        JsonElement last;
        while (true)
        {
            var show = await ProcessRunner.RunAsync("dotnet", [Repo.CliDll, "backup", "show", runKey, "--format", "json", "--endpoint", siloA.GrpcEndpoint], timeout: TimeSpan.FromMinutes(1));
            Assert.True(show.ExitCode == 0, ProcessRunner.Describe(show));
            last = JsonDocument.Parse(show.StandardOutput).RootElement.GetProperty("last_test").Clone();
            if (last.GetProperty("id").GetString() == id && last.GetProperty("outcome").GetString() != "running")
            {
                break;
            }

            Assert.True(restarted.Elapsed < TimeSpan.FromMinutes(3), $"the interrupted test was not recorded in 3 min: {last}\n{siloB.Log}");
            await Task.Delay(500);
        }

        Assert.Equal("failed", last.GetProperty("outcome").GetString());
        Assert.StartsWith("interrupted", last.GetProperty("reason").GetString(), StringComparison.Ordinal);
        Assert.True(last.GetProperty("cleaned_up").GetBoolean(), last.ToString());
        await AssertNoThrowawayAsync(b);
        output.WriteLine($"{sw.Elapsed.TotalSeconds:0.0} s: {b.Name}'s silo restarted; {restarted.Elapsed.TotalSeconds:0.0} s after its start the throwaway was gone and the test recorded: {last.GetProperty("reason").GetString()}");
        return siloB;
    }

    /// <summary>No orch-test domain on the host (running or defined), no orch-test file in its images directory.</summary>
    private static async Task AssertNoThrowawayAsync(LabHost host)
    {
        var all = await host.VirshAsync("list", "--all", "--name");
        Assert.DoesNotContain(all.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries), n => n.StartsWith("orch-test-", StringComparison.Ordinal));
        Assert.Empty(Directory.EnumerateFiles(host.ImagesDir, "orch-test-*"));
    }

    /// <summary>Whether the cluster still counts the host's silo as live (the fleet grain may be on the dead silo: still yes).</summary>
    private static async Task<bool> OnlineAsync(FleetService.FleetServiceClient fleet, string host)
    {
        try
        {
            return (await fleet.ListHostsAsync(new ListHostsRequest())).Hosts.Any(h => h.Name == host && h.Online);
        }
        catch (Grpc.Core.RpcException)
        {
            return true;
        }
    }

    /// <summary>
    /// The seq of the guest's "orch: start seq=N" line (it resumes at the highest record on its disks + 1). Only a whole
    /// line counts: the serial console is written a few characters at a time, "start seq=1" may be the start of "158".
    /// </summary>
    private static async Task<long> WaitForStartSeqAsync(string console, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            if (File.Exists(console))
            {
                var match = System.Text.RegularExpressions.Regex.Match(await ReadSharedAsync(console), @"orch: start seq=(\d+) interval_ms=");
                if (match.Success)
                {
                    return long.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
                }
            }

            Assert.True(DateTime.UtcNow < deadline, $"the copy printed no start line in {timeout.TotalSeconds} s: {(File.Exists(console) ? await ReadSharedAsync(console) : "no console file")}");
            await Task.Delay(250);
        }
    }

    private static async Task WaitForConsoleSeqAsync(string console, long seq, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var seen = System.Text.RegularExpressions.Regex.Matches(await ReadSharedAsync(console), @"orch: seq=(\d+) t=")
                .Select(m => long.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture))
                .DefaultIfEmpty(0)
                .Max();
            if (seen >= seq)
            {
                return;
            }

            Assert.True(DateTime.UtcNow < deadline, $"the copy did not reach seq {seq} in {timeout.TotalSeconds} s (at {seen})");
            await Task.Delay(250);
        }
    }

    private static async Task<string> ReadSharedAsync(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        using var reader = new StreamReader(stream);
        return await reader.ReadToEndAsync();
    }
}
