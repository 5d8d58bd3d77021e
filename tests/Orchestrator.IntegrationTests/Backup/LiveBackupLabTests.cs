using System.Security.Cryptography;
using Grpc.Net.Client;
using Orchestrator.Api.V1;
using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Libvirt;
using Orchestrator.IntegrationTests.Infrastructure;

namespace Orchestrator.IntegrationTests.Backup;

/// <summary>Live backups of real QEMU guests through a real silo process (PostgreSQL mode), with crashes.</summary>
[Collection(BackupLabCollection.Name)]
public sealed class LiveBackupLabTests(BackupLabFixture fixture) : IAsyncLifetime
{
    private readonly string _work = Path.Combine(Path.GetTempPath(), $"orchestrator-lab-{Guid.NewGuid():N}");
    private readonly string _clusterId = $"lab-{Guid.NewGuid():N}"[..16];

    private LabHost Lab => fixture.Lab;

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        // Guests run TCG on 2 cores: stop each test's guests when it ends.
        foreach (var vm in _guests)
        {
            await Lab.LabAsync("vm.sh", "delete", Lab.Name, vm);
        }

        if (Directory.Exists(_work))
        {
            Directory.Delete(_work, recursive: true);
        }
    }

    private readonly List<string> _guests = [];

    private Task CreateGuestAsync(string vm, string disks, int intervalMs = 100)
    {
        _guests.Add(vm);
        return Lab.CreateGuestAsync(vm, disks, intervalMs);
    }

    private static BackupService.BackupServiceClient Backups(SiloProcess silo) => new(GrpcChannel.ForAddress(silo.GrpcEndpoint));

    private async Task<SiloProcess> StartSiloAsync(string guest, IDictionary<string, string>? extra = null)
    {
        var silo = fixture.NewSilo(_work, _clusterId, extra);
        await StartAsync(silo, guest);
        return silo;
    }

    /// <summary>(Re)starts a silo process (same ports, same cluster) and waits until it knows the guest.</summary>
    private async Task StartAsync(SiloProcess silo, string guest)
    {
        silo.Start();
        await silo.WaitReadyAsync(TimeSpan.FromMinutes(3));
        await GrpcClients.Fleet(silo.GrpcEndpoint).WaitForVmAsync($"{Lab.Name}/{guest}", TimeSpan.FromMinutes(2));
    }

    private const string KillAtSetting = "Orchestrator__Backup__KillAt";

    [Fact]
    public async Task Backup_RunningTwoDiskGuest_NeverPausedConsistentVerifiedAndClean()
    {
        const string Guest = "bk-two";
        await CreateGuestAsync(Guest, "raw:64M qcow2:64M", intervalMs: 50);
        await Lab.WaitForSeqAsync(Guest, 20);
        await using var silo = await StartSiloAsync(Guest);
        await using var events = await LibvirtHypervisor.ConnectAsync(Lab.Uri);
        var lifecycle = new List<DomainEvent>();
        events.DomainEvent += (_, e) =>
        {
            if (e.Domain == Guest && e.Kind == DomainEventKind.Lifecycle)
            {
                lock (lifecycle)
                {
                    lifecycle.Add(e);
                }
            }
        };
        var before = await events.GetDomainAsync(Guest);

        // Through the CLI, as an operator would: start, follow to the end, JSON out.
        var cli = await ProcessRunner.RunAsync("dotnet", [Repo.CliDll, "backup", "start", $"{Lab.Name}/{Guest}", "--wait", "--format", "json", "--endpoint", silo.GrpcEndpoint], timeout: TimeSpan.FromMinutes(5));
        Assert.True(cli.ExitCode == 0, ProcessRunner.Describe(cli) + silo.Log);
        using var json = System.Text.Json.JsonDocument.Parse(cli.StandardOutput);
        Assert.Equal("completed", json.RootElement.GetProperty("step").GetString());
        var run = (await Backups(silo).GetBackupAsync(new GetBackupRequest { Key = json.RootElement.GetProperty("key").GetString() })).Run;

        Assert.True(run.Step == BackupStep.Completed, $"run ended {run.Step}: {run.Error}\n{silo.Log}");
        lock (lifecycle)
        {
            Assert.DoesNotContain(lifecycle, e => e.Lifecycle is LifecycleEventType.Suspended or LifecycleEventType.Stopped);
        }

        var after = await events.GetDomainAsync(Guest);
        Assert.Equal(DomainPowerState.Running, after.State);
        Assert.Equal(before.Disks.Select(d => d.SourcePath), after.Disks.Select(d => d.SourcePath));
        Assert.All(after.Disks, d => Assert.Empty(d.BackingChain));
        Assert.Empty(Lab.LeftoverOverlays());
        Assert.Equal(["raw", "qcow2"], run.Disks.Select(d => d.Format));
        foreach (var disk in run.Disks)
        {
            Assert.True(disk.Committed && disk.Verified);
            await using var file = File.OpenRead(disk.BackupPath);
            Assert.Equal(disk.Sha256, Convert.ToHexStringLower(await SHA256.HashDataAsync(file)));
            if (disk.Format == "qcow2")
            {
                // qemu-img has no check for raw images (exit 63); the checksum above covers them.
                var check = await ProcessRunner.RunAsync("qemu-img", ["check", "-f", disk.Format, disk.BackupPath]);
                Assert.True(check.ExitCode == 0, ProcessRunner.Describe(check));
            }
        }

        using (var manifest = System.Text.Json.JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(run.BackupSetPath, "manifest.json"))))
        {
            // Measured from the guest's own lifecycle events by the silo: never paused.
            Assert.Equal(0, manifest.RootElement.GetProperty("guest_paused_ms").GetDouble());
            Assert.Equal(2, manifest.RootElement.GetProperty("disks").GetArrayLength());
        }

        var counter = await Lab.CounterCheckAsync([.. run.Disks.Select(d => d.BackupPath)]);
        Assert.True(counter.Consistent, counter.Json);

        // The guest kept writing through the backup.
        await Lab.WaitForSeqAsync(Guest, counter.MaxSeq + 10, 120);
    }

    [Theory]
    [InlineData("OverlayActive")]
    [InlineData("Copying")]
    [InlineData("Committing")]
    public async Task Backup_SiloKilledAtStep_RestartFinishesOrRollsBackAndLeavesNoOverlay(string killAt)
    {
        var guest = $"bk-kill-{killAt[..4].ToLowerInvariant()}";
        await CreateGuestAsync(guest, "raw:64M qcow2:64M");
        var key = $"{Lab.Name}/{guest}";
        await using var silo = await StartSiloAsync(guest, new Dictionary<string, string> { [KillAtSetting] = killAt });
        var runKey = (await Backups(silo).StartBackupAsync(new StartBackupRequest { Vm = key })).Run.Key;
        Assert.Equal(137, await silo.WaitForExitAsync(TimeSpan.FromMinutes(2)));

        silo.Set(KillAtSetting, null);
        await StartAsync(silo, guest);
        var run = await BackupLabFixture.WaitForRunAsync(Backups(silo), runKey);

        Assert.True(run.Step == BackupStep.Completed || (run.Step == BackupStep.Failed && run.RollingBack), $"{run.Step} {run.Error}");
        var virsh = await Lab.VirshAsync("domblklist", guest);
        Assert.DoesNotContain(".orch-", virsh, StringComparison.Ordinal);
        Assert.Equal("running", (await Lab.VirshAsync("domstate", guest)).Trim());
        Assert.Empty(Lab.LeftoverOverlays());
        if (run.Step == BackupStep.Completed)
        {
            Assert.True((await Lab.CounterCheckAsync([.. run.Disks.Select(d => d.BackupPath)])).Consistent);
        }
    }

    [Fact]
    public async Task Backup_VmPoweredOffWithOverlayActive_ReconcileCommitsOfflineAndVmBootsWithAllData()
    {
        const string Guest = "bk-cut";
        await CreateGuestAsync(Guest, "qcow2:64M raw:64M");
        var key = $"{Lab.Name}/{Guest}";
        await using var silo = await StartSiloAsync(Guest, new Dictionary<string, string> { [KillAtSetting] = "OverlayActive" });
        var runKey = (await Backups(silo).StartBackupAsync(new StartBackupRequest { Vm = key })).Run.Key;
        Assert.Equal(137, await silo.WaitForExitAsync(TimeSpan.FromMinutes(2)));

        // Power cut while the guest runs on the overlays: everything written since is in the overlays only.
        var lastSeq = await Lab.WaitForSeqAsync(Guest, 1);
        lastSeq = await Lab.WaitForSeqAsync(Guest, lastSeq + 15);
        await Lab.VirshAsync("destroy", Guest);

        silo.Set(KillAtSetting, null);
        silo.Start();
        await silo.WaitReadyAsync(TimeSpan.FromMinutes(3));
        var run = await BackupLabFixture.WaitForRunAsync(Backups(silo), runKey);
        Assert.True(run.Step is BackupStep.Completed or BackupStep.Failed, run.Error);
        Assert.Empty(Lab.LeftoverOverlays());
        var xml = await Lab.VirshAsync("dumpxml", "--inactive", Guest);
        Assert.DoesNotContain(".orch-", xml, StringComparison.Ordinal);
        Assert.DoesNotContain("<backingStore type", xml, StringComparison.Ordinal);

        // The guest boots from its bases and continues after the last record it wrote before the cut.
        await Lab.VirshAsync("start", Guest);
        await Lab.WaitForSeqAsync(Guest, lastSeq + 5, 180);
    }

    [Fact]
    public async Task Backup_TargetFillsUpDuringCopy_FailsWithReasonAndCommitsBack()
    {
        const string Guest = "bk-full";
        await CreateGuestAsync(Guest, "raw:64M");
        // 8 MiB of data past the guest's counter ring (it never touches it), so the copy takes a while.
        var image = Path.Combine(Lab.ImagesDir, $"{Guest}-vda.raw");
        var data = await ProcessRunner.RunAsync("dd", ["if=/dev/urandom", $"of={image}", "bs=1M", "count=8", "seek=4", "conv=notrunc"]);
        Assert.True(data.ExitCode == 0, ProcessRunner.Describe(data));
        var target = Path.Combine(fixture.BackupRoot, "tiny");
        Directory.CreateDirectory(target);
        var mount = await ProcessRunner.RunAsync("mount", ["-t", "tmpfs", "-o", "size=16m", "tmpfs", target]);
        Assert.True(mount.ExitCode == 0, ProcessRunner.Describe(mount));
        try
        {
            await using var silo = await StartSiloAsync(Guest);
            // Slow copy, then fill the target under it.
            var started = (await Backups(silo).StartBackupAsync(new StartBackupRequest { Vm = $"{Lab.Name}/{Guest}", Target = target, BandwidthBytesPerSecond = 1 << 20 })).Run;
            var filler = Path.Combine(target, "filler");
            var fill = await ProcessRunner.RunAsync("dd", ["if=/dev/zero", $"of={filler}", "bs=1M", "count=32"]);
            Assert.NotEqual(0, fill.ExitCode); // the tmpfs is full now

            var run = await BackupLabFixture.WaitForRunAsync(Backups(silo), started.Key);
            Assert.Equal(BackupStep.Failed, run.Step);
            Assert.True(run.RollingBack);
            Assert.Contains("space", run.Error, StringComparison.OrdinalIgnoreCase);
            Assert.Equal("running", (await Lab.VirshAsync("domstate", Guest)).Trim());
            Assert.DoesNotContain(".orch-", await Lab.VirshAsync("domblklist", Guest), StringComparison.Ordinal);
            Assert.Empty(Lab.LeftoverOverlays());
        }
        finally
        {
            await ProcessRunner.RunAsync("umount", ["-l", target]);
        }
    }

    [Fact]
    public async Task Restore_DefineWhileTheOriginalRuns_BootsOnItsOwnConsoleLogAndContinuesFromTheBackupPoint()
    {
        const string Guest = "bk-src";
        const string Copy = "bk-restored";
        await CreateGuestAsync(Guest, "qcow2:64M");
        await Lab.WaitForSeqAsync(Guest, 10);
        await using var silo = await StartSiloAsync(Guest);
        var run = await BackupLabFixture.WaitForRunAsync(Backups(silo), (await Backups(silo).StartBackupAsync(new StartBackupRequest { Vm = $"{Lab.Name}/{Guest}" })).Run.Key);
        Assert.Equal(BackupStep.Completed, run.Step);
        var atBackup = (await Lab.CounterCheckAsync(run.Disks[0].BackupPath)).MaxSeq;

        // Through the CLI, which lists what the new definition no longer shares with the original.
        _guests.Add(Copy);
        var cli = await ProcessRunner.RunAsync("dotnet", [Repo.CliDll, "restore", run.Key, "--as", Copy, "--define", "--format", "json", "--endpoint", silo.GrpcEndpoint], timeout: TimeSpan.FromMinutes(3));
        Assert.True(cli.ExitCode == 0, ProcessRunner.Describe(cli) + silo.Log);
        using var json = System.Text.Json.JsonDocument.Parse(cli.StandardOutput);
        Assert.True(json.RootElement.GetProperty("defined").GetBoolean());
        var changes = json.RootElement.GetProperty("changes").EnumerateArray().Select(c => c.GetString()).ToList();
        Assert.Contains($"serial 0: file '{Lab.ConsolePath(Guest)}' -> '{Lab.ConsolePath(Copy)}'", changes);
        var again = await Assert.ThrowsAsync<Grpc.Core.RpcException>(async () => await Backups(silo).RestoreAsync(new RestoreRequest { Key = run.Key, NewName = Copy, Define = true }));
        Assert.Equal(Grpc.Core.StatusCode.AlreadyExists, again.StatusCode);

        // Both run at once, each on its own console file: the original's log gets no boot of the copy.
        var originalLog = new FileInfo(Lab.ConsolePath(Guest)).Length;
        var original = await Lab.WaitForSeqAsync(Guest, 1);
        await Lab.VirshAsync("start", Copy);
        await Lab.WaitForSeqAsync(Copy, atBackup + 3, 180);
        await Lab.WaitForSeqAsync(Guest, original + 3, 180);
        Assert.Equal("running", (await Lab.VirshAsync("domstate", Guest)).Trim());
        var originalSince = Lab.ConsoleSeqsAfter(Guest, originalLog, out var originalRebooted);
        Assert.False(originalRebooted, "the copy booted into the original's console log");
        Assert.True(originalSince.Count > 0 && originalSince.All(s => s.Seq > atBackup + 3), "the copy's counter shows in the original's log");
        Assert.Contains("orch: init start", await File.ReadAllTextAsync(Lab.ConsolePath(Copy)), StringComparison.Ordinal);

        await Lab.VirshAsync("destroy", Copy);
        var report = await Lab.CounterCheckAsync(json.RootElement.GetProperty("images")[0].GetString()!);
        Assert.True(report.Consistent, report.Json);
        Assert.True(report.MaxSeq > atBackup, $"restored guest did not continue: max {report.MaxSeq}, backup point {atBackup}");
    }
}
