using System.Diagnostics;
using System.Text.Json;
using Grpc.Net.Client;
using Orchestrator.Api.V1;
using Orchestrator.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace Orchestrator.IntegrationTests.Backup;

/// <summary>
/// Shut-off and paused counter guests backed up by a policy run through a real silo process and the real CLI: the
/// shut-off one offline, the paused one live; both restored with <c>orchestrator restore</c> and counter-checked, both
/// left as they were. Then a shut-off guest started with virsh in the middle of its (bandwidth-limited) offline copy.
/// One test, one silo, guests booted once.
/// </summary>
[Collection(SecondBackupLabCollection.Name)]
public sealed class OfflineBackupLabTests(SecondBackupLabFixture fixture, ITestOutputHelper output) : IAsyncLifetime
{
    private const string Policy = "offpaused";
    private readonly string _work = Path.Combine(Path.GetTempPath(), $"orchestrator-lab-{Guid.NewGuid():N}");
    private readonly string _clusterId = $"lab-{Guid.NewGuid():N}"[..16];
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

    private Task CreateGuestAsync(string vm, string disks)
    {
        _guests.Add(vm);
        return Lab.CreateGuestAsync(vm, disks, intervalMs: 50);
    }

    private static async Task<JsonElement> CliJsonAsync(SiloProcess silo, params string[] args)
    {
        var result = await ProcessRunner.RunAsync("dotnet", [Repo.CliDll, .. args, "--format", "json", "--endpoint", silo.GrpcEndpoint], timeout: TimeSpan.FromMinutes(3));
        Assert.True(result.ExitCode == 0, $"orchestrator {string.Join(' ', args)}: {ProcessRunner.Describe(result)}\n{silo.Log}");
        using var json = JsonDocument.Parse(result.StandardOutput);
        return json.RootElement.Clone();
    }

    [Fact]
    public async Task PolicyRun_ShutOffAndPausedGuests_BothCompletedRestorableAndLeftAsTheyWere_AndAStartMidCopyGoesLive()
    {
        const string Off = "off-pol";
        const string Paused = "pz-pol";
        const string Started = "off-start";
        var total = Stopwatch.StartNew();
        await Task.WhenAll(CreateGuestAsync(Off, "qcow2:32M raw:32M"), CreateGuestAsync(Paused, "qcow2:32M"), CreateGuestAsync(Started, "raw:64M"));
        await Task.WhenAll(Lab.WaitForSeqAsync(Off, 10), Lab.WaitForSeqAsync(Paused, 10), Lab.WaitForSeqAsync(Started, 5));

        // A power cut leaves the shut-off guest's images with what it wrote; the paused one keeps its QEMU.
        await Lab.VirshAsync("destroy", Off);
        await Lab.VirshAsync("destroy", Started);
        await Lab.VirshAsync("suspend", Paused);
        var offImages = new[] { Lab.DiskPath(Off, "vda", "qcow2"), Lab.DiskPath(Off, "vdb", "raw") };
        var offBefore = await Lab.CounterCheckAsync(offImages);
        Assert.True(offBefore.Consistent && offBefore.MaxSeq >= 10, offBefore.Json);

        // 8 MiB past the counter ring (the guest never touches it): at 1 MiB/s its offline copy takes about 8 s.
        var startedImage = Lab.DiskPath(Started, "vda", "raw");
        var data = await ProcessRunner.RunAsync("dd", ["if=/dev/urandom", $"of={startedImage}", "bs=1M", "count=8", "seek=4", "conv=notrunc"]);
        Assert.True(data.ExitCode == 0, ProcessRunner.Describe(data));

        await using var silo = fixture.NewSilo(_work, _clusterId);
        silo.Start();
        await silo.WaitReadyAsync(TimeSpan.FromMinutes(3));
        var fleet = GrpcClients.Fleet(silo.GrpcEndpoint);
        await Task.WhenAll(new[] { Off, Paused, Started }.Select(g => fleet.WaitForVmAsync($"{Lab.Name}/{g}", TimeSpan.FromMinutes(2))));
        var setUp = total.Elapsed;

        // ---- The policy run over both, through the CLI.
        var file = Path.Combine(_work, Policy + ".yaml");
        await File.WriteAllTextAsync(file, $"""
            name: {Policy}
            kind: live-backup
            selector:
              hosts: ["{Lab.Name}"]
              vms: ["{Off}", "{Paused}"]
            retention:
              keep_last: 2
            target: {Path.Combine(fixture.BackupRoot, Policy)}
            quiesce: try
            verify: true
            concurrency:
              per_host: 2
              fleet: 2
            """);
        await CliJsonAsync(silo, "policy", "apply", "-f", file);
        var policyRun = Stopwatch.StartNew();
        var run = await CliJsonAsync(silo, "policy", "run", Policy, "--watch");
        policyRun.Stop();
        var targets = run.GetProperty("targets").EnumerateArray().ToDictionary(t => t.GetProperty("vm").GetString()!, t => t);
        Assert.Equal([Off, Paused], targets.Keys.Order());
        Assert.All(targets.Values, t => Assert.True(t.GetProperty("status").GetString() == "succeeded", t.ToString()));

        var offRun = await CliJsonAsync(silo, "backup", "show", targets[Off].GetProperty("backup_run").GetString()!);
        var pausedRun = await CliJsonAsync(silo, "backup", "show", targets[Paused].GetProperty("backup_run").GetString()!);
        Assert.True(offRun.GetProperty("step").GetString() == "completed", offRun.ToString());
        Assert.Equal("offline", offRun.GetProperty("method").GetString());
        Assert.True(pausedRun.GetProperty("step").GetString() == "completed", pausedRun.ToString());
        Assert.Equal("live", pausedRun.GetProperty("method").GetString());
        Assert.Contains("paused", pausedRun.GetProperty("quiesce_outcome").GetString(), StringComparison.Ordinal);

        // Each left exactly as it was: off and on its own images; paused, on its own images, never resumed.
        Assert.Equal("shut off", (await Lab.VirshAsync("domstate", Off)).Trim());
        Assert.Equal("paused", (await Lab.VirshAsync("domstate", Paused)).Trim());
        Assert.DoesNotContain(".orch-", await Lab.VirshAsync("domblklist", Paused), StringComparison.Ordinal);
        Assert.Empty(Lab.LeftoverOverlays());

        // The offline copy holds exactly what the images hold (they were not written since).
        var offBackups = offRun.GetProperty("disks").EnumerateArray().Select(d => d.GetProperty("backup_path").GetString()!).ToArray();
        var offCopy = await Lab.CounterCheckAsync(offBackups);
        Assert.True(offCopy.Consistent && offCopy.MaxSeq == offBefore.MaxSeq, $"{offCopy.Json} vs {offBefore.Json}");

        // ---- Both restored with `orchestrator restore`, unchanged; the restored images counter-checked (not booted).
        var restore = Stopwatch.StartNew();
        foreach (var (key, copy) in new[] { (offRun.GetProperty("key").GetString()!, "off-pol-r"), (pausedRun.GetProperty("key").GetString()!, "pz-pol-r") })
        {
            _guests.Add(copy);
            var restored = await CliJsonAsync(silo, "restore", key, "--as", copy, "--define");
            var images = restored.GetProperty("images").EnumerateArray().Select(i => i.GetString()!).ToArray();
            var report = await Lab.CounterCheckAsync(images);
            Assert.True(report.Consistent && report.MaxSeq >= 10, $"{copy}: {report.Json}");
        }

        restore.Stop();

        // ---- A shut-off guest started with virsh in the middle of its offline copy: the copy is discarded and the same
        //      run goes on live.
        var backups = new BackupService.BackupServiceClient(GrpcChannel.ForAddress(silo.GrpcEndpoint));
        var startedRun = (await backups.StartBackupAsync(new StartBackupRequest { Vm = $"{Lab.Name}/{Started}", BandwidthBytesPerSecond = 1 << 20 })).Run;
        Assert.Equal("offline", startedRun.Method);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (startedRun.Step != BackupStep.Copying || startedRun.Disks.Sum(d => d.BytesCopied) == 0)
        {
            Assert.True(DateTime.UtcNow < deadline && startedRun.Step is not (BackupStep.Completed or BackupStep.Failed), $"the copy did not start: {startedRun}");
            await Task.Delay(100);
            startedRun = (await backups.GetBackupAsync(new GetBackupRequest { Key = startedRun.Key })).Run;
        }

        await Lab.VirshAsync("start", Started);
        startedRun = await BackupLabFixture.WaitForRunAsync(backups, startedRun.Key);
        Assert.True(startedRun.Step == BackupStep.Completed, $"{startedRun.Step}: {startedRun.Error}\n{silo.Log}");
        Assert.Equal("live", startedRun.Method);
        Assert.Contains(startedRun.Steps, s => s.Note.Contains("the copy was discarded", StringComparison.Ordinal));
        Assert.Equal("running", (await Lab.VirshAsync("domstate", Started)).Trim());
        Assert.DoesNotContain(".orch-", await Lab.VirshAsync("domblklist", Started), StringComparison.Ordinal);
        Assert.Empty(Lab.LeftoverOverlays());
        var live = await Lab.CounterCheckAsync([.. startedRun.Disks.Select(d => d.BackupPath)]);
        Assert.True(live.Consistent, live.Json);

        output.WriteLine($"offline/paused lab test: set-up {setUp.TotalSeconds:F1} s, policy run {policyRun.Elapsed.TotalSeconds:F1} s, "
            + $"2 restores {restore.Elapsed.TotalSeconds:F1} s, total {total.Elapsed.TotalSeconds:F1} s");
    }
}
