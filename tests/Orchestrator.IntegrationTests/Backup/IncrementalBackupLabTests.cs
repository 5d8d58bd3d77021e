using System.Diagnostics;
using System.Text.Json;
using Orchestrator.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace Orchestrator.IntegrationTests.Backup;

/// <summary>
/// Incremental backups on a real QEMU guest through a real silo process and the real CLI: a full, three incrementals
/// while the counter guest writes, each point flattened from the set files alone (formats named) and counter-checked,
/// then QEMU SIGKILLed, after which the next <c>--incremental</c> is a full with the reason. One guest boot for all.
/// </summary>
[Collection(SecondBackupLabCollection.Name)]
public sealed class IncrementalBackupLabTests(SecondBackupLabFixture fixture, ITestOutputHelper output) : IAsyncLifetime
{
    private const string Guest = "bk-inc";
    private readonly string _work = Path.Combine(Path.GetTempPath(), $"orchestrator-lab-{Guid.NewGuid():N}");
    private readonly string _clusterId = $"lab-{Guid.NewGuid():N}"[..16];

    private LabHost Lab => fixture.Lab;

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        await Lab.LabAsync("vm.sh", "delete", Lab.Name, Guest);
        if (Directory.Exists(_work))
        {
            Directory.Delete(_work, recursive: true);
        }
    }

    [Fact]
    public async Task Incremental_FullThenThreeWhileWriting_EachPointFlattensConsistent_QemuKilledNextIsAFullWithTheReason()
    {
        var total = Stopwatch.StartNew();
        // 32 MiB of data beside the counter's 256 KiB ring (at the disk's start), written before the guest boots: the
        // full copies it, the incrementals must not.
        await Lab.CreateVmAsync(Guest, "qcow2:64M", intervalMs: 50, start: false);
        var fill = await ProcessRunner.RunAsync("qemu-io", ["-f", "qcow2", "-c", "write -q -P 0x5a 8M 32M", Lab.DiskPath(Guest, "vda", "qcow2")], timeout: TimeSpan.FromMinutes(1));
        Assert.True(fill.ExitCode == 0, ProcessRunner.Describe(fill));
        await Lab.StartVmAsync(Guest);
        var seq = await Lab.WaitForSeqAsync(Guest, 20);
        await using var silo = fixture.NewSilo(_work, _clusterId);
        silo.Start();
        await silo.WaitReadyAsync(TimeSpan.FromMinutes(3));
        await GrpcClients.Fleet(silo.GrpcEndpoint).WaitForVmAsync($"{Lab.Name}/{Guest}", TimeSpan.FromMinutes(2));

        // A full, then three incrementals, each after the guest wrote more records.
        var points = new List<(JsonElement Run, long SeqBefore)>();
        for (var i = 0; i < 4; i++)
        {
            seq = await Lab.WaitForSeqAsync(Guest, seq + 20);
            points.Add((await BackUpAsync(silo), seq));
        }

        Assert.Equal(["full", "incremental", "incremental", "incremental"], points.Select(p => p.Run.GetProperty("level").GetString()));
        Assert.Equal(JsonValueKind.Null, points[0].Run.GetProperty("parent").ValueKind);
        for (var i = 1; i < points.Count; i++)
        {
            Assert.Equal(points[i - 1].Run.GetProperty("key").GetString(), points[i].Run.GetProperty("parent").GetString());
        }

        // Every point restores from the set files alone: the image's header names its parent set's image (relative,
        // format qcow2), so qemu-img convert -f qcow2 -O raw flattens the chain up to it.
        var lastSeq = -1L;
        var bytes = new List<long>();
        for (var i = 0; i < points.Count; i++)
        {
            var disk = points[i].Run.GetProperty("disks")[0];
            var image = disk.GetProperty("backup_path").GetString()!;
            var info = await ProcessRunner.RunAsync("qemu-img", ["info", "-f", "qcow2", "--output", "json", image]);
            Assert.True(info.ExitCode == 0, ProcessRunner.Describe(info));
            using var header = JsonDocument.Parse(info.StandardOutput);
            bytes.Add(header.RootElement.GetProperty("actual-size").GetInt64());
            if (i == 0)
            {
                Assert.False(header.RootElement.TryGetProperty("backing-filename", out _), info.StandardOutput);
            }
            else
            {
                var parentImage = points[i - 1].Run.GetProperty("disks")[0].GetProperty("backup_path").GetString()!;
                Assert.Equal(Path.GetRelativePath(Path.GetDirectoryName(image)!, parentImage), header.RootElement.GetProperty("backing-filename").GetString());
                Assert.Equal("qcow2", header.RootElement.GetProperty("backing-filename-format").GetString());
            }

            var flat = Path.Combine(_work, $"point-{i}.raw");
            Directory.CreateDirectory(_work);
            var convert = await ProcessRunner.RunAsync("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", image, flat], timeout: TimeSpan.FromMinutes(2));
            Assert.True(convert.ExitCode == 0, ProcessRunner.Describe(convert));
            var counter = await Lab.CounterCheckAsync(flat);
            Assert.True(counter.Consistent, $"point {i}: {counter.Json}");
            Assert.True(counter.MaxSeq >= points[i].SeqBefore && counter.MaxSeq > lastSeq, $"point {i}: max seq {counter.MaxSeq}, guest was at {points[i].SeqBefore} before it, previous point {lastSeq}");
            lastSeq = counter.MaxSeq;
            File.Delete(flat);
        }

        output.WriteLine($"allocated bytes of each set's image (qemu-img info actual-size): full {bytes[0]}, incrementals {string.Join(", ", bytes.Skip(1))}");
        Assert.True(bytes[0] > 32L << 20, $"the full holds {bytes[0]} bytes, less than the 32 MiB written before boot");
        Assert.All(bytes.Skip(1), b => Assert.True(b * 16 < bytes[0], $"incremental holds {b} bytes, the full {bytes[0]}"));

        // QEMU killed: the bitmap made at runtime was never stored; libvirt still lists the checkpoint. The next
        // --incremental is refused by libvirt's bitmap check and becomes a full, with the reason.
        KillQemu();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!(await Lab.DomainStateAsync(Guest)).StartsWith("shut off", StringComparison.Ordinal))
        {
            Assert.True(DateTime.UtcNow < deadline, "the guest never stopped after SIGKILL");
            await Task.Delay(200);
        }

        await Lab.StartVmAsync(Guest);
        await Lab.WaitForSeqAsync(Guest, 1);
        var after = await BackUpAsync(silo);
        Assert.Equal("full", after.GetProperty("level").GetString());
        Assert.Contains("bitmap", after.GetProperty("level_reason").GetString(), StringComparison.Ordinal);
        output.WriteLine($"after SIGKILL: {after.GetProperty("level_reason").GetString()}");
        output.WriteLine($"wall time {total.Elapsed.TotalSeconds:F1} s");
    }

    /// <summary>backup start --incremental --wait through the CLI; the ended run's JSON.</summary>
    private async Task<JsonElement> BackUpAsync(SiloProcess silo)
    {
        var clock = Stopwatch.StartNew();
        var cli = await ProcessRunner.RunAsync(
            "dotnet",
            [Repo.CliDll, "backup", "start", $"{Lab.Name}/{Guest}", "--incremental", "--wait", "--format", "json", "--endpoint", silo.GrpcEndpoint],
            timeout: TimeSpan.FromMinutes(3));
        Assert.True(cli.ExitCode == 0, ProcessRunner.Describe(cli) + silo.Log);
        using var json = JsonDocument.Parse(cli.StandardOutput);
        var run = json.RootElement.Clone();
        Assert.Equal("completed", run.GetProperty("step").GetString());
        Assert.Equal("backup-job", run.GetProperty("method").GetString());
        output.WriteLine($"{run.GetProperty("key").GetString()}: {run.GetProperty("level").GetString()} ({run.GetProperty("level_reason").GetString()}), {run.GetProperty("disks")[0].GetProperty("bytes_copied").GetInt64()} bytes, CLI start to end {clock.Elapsed.TotalSeconds:F1} s");
        return run;
    }

    /// <summary>SIGKILL to this test's guest's QEMU, found by its -name guest=NAME argument and this lab's host dir.</summary>
    private void KillQemu()
    {
        var killed = 0;
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid))
            {
                continue;
            }

            string cmdline;
            try
            {
                cmdline = File.ReadAllText(Path.Combine(dir, "cmdline")).Replace('\0', ' ');
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue;
            }

            if (cmdline.Contains("qemu-system", StringComparison.Ordinal) && cmdline.Contains($"guest={Guest},", StringComparison.Ordinal) && cmdline.Contains(Lab.ImagesDir, StringComparison.Ordinal))
            {
                Process.GetProcessById(pid).Kill();
                killed++;
            }
        }

        Assert.Equal(1, killed);
    }
}
