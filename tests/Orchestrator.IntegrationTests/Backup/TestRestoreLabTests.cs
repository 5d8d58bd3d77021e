using System.Globalization;
using System.Text.Json;
using Grpc.Net.Client;
using Orchestrator.Api.V1;
using Orchestrator.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace Orchestrator.IntegrationTests.Backup;

/// <summary>
/// <c>orchestrator backup test</c> through the real CLI against a real silo process and a real lab guest (TCG) that runs
/// qemu-ga: a good set boots and its agent answers; a set with flipped bytes fails; the throwaway VM and its images
/// are gone afterwards either way.
/// </summary>
[Collection(SecondBackupLabCollection.Name)]
public sealed class TestRestoreLabTests(SecondBackupLabFixture fixture, ITestOutputHelper output) : IAsyncLifetime
{
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

    [Fact]
    public async Task BackupTest_GoodSet_BootsProbesAnswerAndNothingIsLeft()
    {
        const string Guest = "tr-good";
        var (silo, runKey) = await BackUpAgentGuestAsync(Guest);
        await using var _ = silo;

        // Default probe: guest-ping through libvirt to the restored guest's own qemu-ga.
        var agent = await BackupTestAsync(silo, runKey);
        Assert.True(agent.ExitCode == 0, ProcessRunner.Describe(agent) + silo.Log);
        var test = JsonDocument.Parse(agent.StandardOutput).RootElement;
        Assert.Equal("passed", test.GetProperty("outcome").GetString());
        Assert.Equal("agent", test.GetProperty("probe").GetString());
        Assert.True(test.GetProperty("cleaned_up").GetBoolean(), agent.StandardOutput);
        var domain = test.GetProperty("domain").GetString()!;
        Assert.StartsWith($"orch-test-{Guest}-", domain, StringComparison.Ordinal);
        var boot = test.GetProperty("boot_seconds").GetDouble();
        Assert.InRange(boot, 0.1, 240);
        output.WriteLine($"agent probe: restore {test.GetProperty("restore_seconds").GetDouble():0.00} s, boot to agent answer {boot:0.00} s");
        await AssertNothingLeftAsync(domain);

        // The console probe reads the throwaway VM's own console file: the lab guest prints its counter there.
        var console = await BackupTestAsync(silo, runKey, "--probe", "console:orch: seq=[0-9]+");
        Assert.True(console.ExitCode == 0, ProcessRunner.Describe(console) + silo.Log);
        test = JsonDocument.Parse(console.StandardOutput).RootElement;
        Assert.Equal("passed", test.GetProperty("outcome").GetString());
        Assert.True(test.GetProperty("cleaned_up").GetBoolean(), console.StandardOutput);
        output.WriteLine($"console probe: boot to matching line {test.GetProperty("boot_seconds").GetDouble():0.00} s");
        await AssertNothingLeftAsync(domain);

        // A command through the agent must exit 0: the restored disk holds the counter's records.
        var command = await BackupTestAsync(silo, runKey, "--probe", "command:grep -q ORCHREC1 /dev/vda");
        Assert.True(command.ExitCode == 0, ProcessRunner.Describe(command) + silo.Log);
        output.WriteLine($"command probe: boot to exit 0 {JsonDocument.Parse(command.StandardOutput).RootElement.GetProperty("boot_seconds").GetDouble():0.00} s");
        var failing = await BackupTestAsync(silo, runKey, "--probe", "command:exit 3");
        Assert.True(failing.ExitCode == 7, ProcessRunner.Describe(failing));
        test = JsonDocument.Parse(failing.StandardOutput).RootElement;
        Assert.Equal("failed", test.GetProperty("outcome").GetString());
        Assert.Contains("exited 3", test.GetProperty("reason").GetString(), StringComparison.Ordinal);
        await AssertNothingLeftAsync(domain);

        // Stored with the VM and the run: the last proven restore is the command test that passed.
        var show = await ProcessRunner.RunAsync("dotnet", [Repo.CliDll, "vm", "show", $"{Lab.Name}/{Guest}", "--format", "json", "--endpoint", silo.GrpcEndpoint]);
        Assert.True(show.ExitCode == 0, ProcessRunner.Describe(show));
        var vm = JsonDocument.Parse(show.StandardOutput).RootElement;
        Assert.Equal("passed", vm.GetProperty("last_proven_restore").GetProperty("outcome").GetString());
        Assert.Equal("failed", vm.GetProperty("last_test_restore").GetProperty("outcome").GetString());
        var run = await ProcessRunner.RunAsync("dotnet", [Repo.CliDll, "backup", "show", runKey, "--format", "json", "--endpoint", silo.GrpcEndpoint]);
        Assert.True(run.ExitCode == 0, ProcessRunner.Describe(run));
        Assert.Equal("failed", JsonDocument.Parse(run.StandardOutput).RootElement.GetProperty("last_test").GetProperty("outcome").GetString());

        // The counter the Prometheus alert reads, by outcome.
        using var http = new HttpClient();
        var metrics = await http.GetStringAsync(new Uri($"http://127.0.0.1:{silo.HttpPort}/metrics"));
        Assert.Contains(metrics.Split('\n'), l => l.StartsWith("orchestrator_backup_tests_total{", StringComparison.Ordinal) && l.Contains("outcome=\"passed\"", StringComparison.Ordinal) && l.EndsWith(" 3", StringComparison.Ordinal));
        Assert.Contains(metrics.Split('\n'), l => l.StartsWith("orchestrator_backup_tests_total{", StringComparison.Ordinal) && l.Contains("outcome=\"failed\"", StringComparison.Ordinal) && l.EndsWith(" 1", StringComparison.Ordinal));
    }

    [Fact]
    public async Task BackupTest_FlippedBytesInTheSet_FailsAndNothingIsLeft()
    {
        const string Guest = "tr-flip";
        var (silo, runKey) = await BackUpAgentGuestAsync(Guest);
        await using var _ = silo;
        var backup = (await new BackupService.BackupServiceClient(GrpcChannel.ForAddress(silo.GrpcEndpoint)).GetBackupAsync(new GetBackupRequest { Key = runKey })).Run;
        var image = backup.Disks.Single().BackupPath;

        // Bit rot in the stored image: a few bytes flipped in the middle of the data.
        await using (var file = new FileStream(image, FileMode.Open, FileAccess.ReadWrite))
        {
            var offset = file.Length / 2;
            var bytes = new byte[16];
            file.Position = offset;
            await file.ReadExactlyAsync(bytes);
            for (var i = 0; i < bytes.Length; i++)
            {
                bytes[i] ^= 0xFF;
            }

            file.Position = offset;
            await file.WriteAsync(bytes);
        }

        var result = await BackupTestAsync(silo, runKey);
        Assert.True(result.ExitCode == 7, ProcessRunner.Describe(result) + silo.Log);
        var test = JsonDocument.Parse(result.StandardOutput).RootElement;
        Assert.Equal("failed", test.GetProperty("outcome").GetString());
        Assert.Contains("checksum", test.GetProperty("reason").GetString(), StringComparison.Ordinal);
        Assert.True(test.GetProperty("cleaned_up").GetBoolean(), result.StandardOutput);
        output.WriteLine($"flipped bytes: {test.GetProperty("reason").GetString()} after {test.GetProperty("restore_seconds").GetDouble():0.00} s");
        await AssertNothingLeftAsync(test.GetProperty("domain").GetString()!);
    }

    /// <summary>A counter guest with qemu-ga, a silo for it, and a completed backup through the CLI; returns the run key.</summary>
    private async Task<(SiloProcess Silo, string RunKey)> BackUpAgentGuestAsync(string guest)
    {
        _guests.Add(guest);
        await Lab.LabAsync("vm.sh", "delete", Lab.Name, guest);
        await Lab.LabAsync("vm.sh", "create", Lab.Name, guest, "--disks", "qcow2:64M", "--interval-ms", "200", "--agent");
        await Lab.WaitForSeqAsync(guest, 5);
        var silo = fixture.NewSilo(_work, _clusterId);
        silo.Start();
        await silo.WaitReadyAsync(TimeSpan.FromMinutes(3));
        await GrpcClients.Fleet(silo.GrpcEndpoint).WaitForVmAsync($"{Lab.Name}/{guest}", TimeSpan.FromMinutes(2));
        var cli = await ProcessRunner.RunAsync("dotnet", [Repo.CliDll, "backup", "start", $"{Lab.Name}/{guest}", "--wait", "--format", "json", "--endpoint", silo.GrpcEndpoint], timeout: TimeSpan.FromMinutes(5));
        Assert.True(cli.ExitCode == 0, ProcessRunner.Describe(cli) + silo.Log);
        var run = JsonDocument.Parse(cli.StandardOutput).RootElement;
        Assert.Equal("completed", run.GetProperty("step").GetString());
        return (silo, run.GetProperty("key").GetString()!);
    }

    private static Task<ProcessResult> BackupTestAsync(SiloProcess silo, string runKey, params string[] extra) =>
        ProcessRunner.RunAsync(
            "dotnet",
            [Repo.CliDll, "backup", "test", runKey, "--format", "json", "--timeout", "240", "--endpoint", silo.GrpcEndpoint, .. extra],
            timeout: TimeSpan.FromMinutes(9));

    /// <summary>No orch-test domain on the host (running or defined), no file of it beside the images.</summary>
    private async Task AssertNothingLeftAsync(string domain)
    {
        var all = await Lab.VirshAsync("list", "--all", "--name");
        Assert.DoesNotContain(all.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries), n => n.StartsWith("orch-test-", StringComparison.Ordinal));
        Assert.Empty(Directory.EnumerateFiles(Lab.ImagesDir, "orch-test-*"));
        Assert.DoesNotContain(domain, all, StringComparison.Ordinal);
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"after the test: virsh list --all has no orch-test-*; {Lab.ImagesDir} has no orch-test-* file"));
    }
}
