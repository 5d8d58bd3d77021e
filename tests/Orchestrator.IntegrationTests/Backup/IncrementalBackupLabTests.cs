using System.Diagnostics;
using System.Text.Json;
using Orchestrator.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace Orchestrator.IntegrationTests.Backup;

/// <summary>
/// Incremental backups on a real QEMU guest through a real silo process and the real CLI: a full, three incrementals
/// while the counter guest writes, the chain verified (<c>backup verify</c>), each of the four points restored through
/// <c>orchestrator restore</c> (the chain walked and flattened), counter-checked and booted (two at a time: the copy
/// counts on from the point's last record); then the bitmap-loss cases: QEMU SIGKILLed (next <c>--incremental</c> is a
/// full with the reason), the VM undefined and defined again (the checkpoint defined again from grain state, the next
/// incremental works), and the bitmap removed with <c>qemu-img bitmap --remove</c> while shut off (a full with the
/// reason); each of those points restores. One boot of the original guest for all.
/// </summary>
[Collection(SecondBackupLabCollection.Name)]
public sealed partial class IncrementalBackupLabTests(SecondBackupLabFixture fixture, ITestOutputHelper output) : IAsyncLifetime
{
    private const string Guest = "bk-inc";
    private readonly string _work = Path.Combine(Path.GetTempPath(), $"orchestrator-lab-{Guid.NewGuid():N}");
    private readonly string _clusterId = $"lab-{Guid.NewGuid():N}"[..16];

    private readonly List<string> _restored = [];

    private LabHost Lab => fixture.Lab;

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var name in _restored)
        {
            await Lab.LabAsync("vm.sh", "delete", Lab.Name, name);
        }

        await Lab.LabAsync("vm.sh", "delete", Lab.Name, Guest);
        if (Directory.Exists(_work))
        {
            Directory.Delete(_work, recursive: true);
        }
    }

    [Fact]
    public async Task Incremental_FullThenThreeWhileWriting_EachPointRestoredAndBooted_BitmapLossFallsBackOrRedefines()
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

        // The header of each set's image names its parent set's image (relative, format qcow2); a full's names none.
        var bytes = new List<long>();
        for (var i = 0; i < points.Count; i++)
        {
            var image = points[i].Run.GetProperty("disks")[0].GetProperty("backup_path").GetString()!;
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
        }

        output.WriteLine($"allocated bytes of each set's image (qemu-img info actual-size): full {bytes[0]}, incrementals {string.Join(", ", bytes.Skip(1))}");
        Assert.True(bytes[0] > 32L << 20, $"the full holds {bytes[0]} bytes, less than the 32 MiB written before boot");
        Assert.All(bytes.Skip(1), b => Assert.True(b * 16 < bytes[0], $"incremental holds {b} bytes, the full {bytes[0]}"));

        // backup verify of the newest point: all four sets, top first, each passed.
        var clock = Stopwatch.StartNew();
        var verify = await CliAsync(silo, "backup", "verify", points[3].Run.GetProperty("key").GetString()!);
        Assert.True(verify.GetProperty("passed").GetBoolean(), verify.ToString());
        Assert.Equal(points.Select(p => p.Run.GetProperty("key").GetString()).Reverse(), verify.GetProperty("sets").EnumerateArray().Select(s => s.GetProperty("run").GetString()));
        Assert.All(verify.GetProperty("sets").EnumerateArray(), s => Assert.True(s.GetProperty("passed").GetBoolean()));
        output.WriteLine($"backup verify of the 4-set chain through the CLI: passed in {clock.Elapsed.TotalSeconds:F1} s");

        // Each point restored through the CLI (chain walked and checked, every layer flattened with its format named)
        // as a new VM; its image counter-checked, then booted two at a time: it counts on from the point's last record.
        var lastSeq = -1L;
        var restored = new List<(string Name, string Console, long MaxSeq)>();
        for (var i = 0; i < points.Count; i++)
        {
            var name = $"{Guest}-r{i}";
            _restored.Add(name);
            clock.Restart();
            var result = await CliAsync(silo, "restore", points[i].Run.GetProperty("key").GetString()!, "--as", name, "--define");
            var restoreSeconds = clock.Elapsed.TotalSeconds;
            var image = Assert.Single(result.GetProperty("images").EnumerateArray()).GetString()!;
            var header = await ProcessRunner.RunAsync("qemu-img", ["info", "-f", "qcow2", "--output", "json", image]);
            Assert.DoesNotContain("backing-filename", header.StandardOutput, StringComparison.Ordinal); // standalone
            var counter = await CounterCheckQcow2Async(image);
            Assert.True(counter.Consistent, $"point {i}: {counter.Json}");
            Assert.True(counter.MaxSeq >= points[i].SeqBefore && counter.MaxSeq > lastSeq, $"point {i}: max seq {counter.MaxSeq}, guest was at {points[i].SeqBefore} before it, previous point {lastSeq}");
            lastSeq = counter.MaxSeq;
            var console = result.GetProperty("changes").EnumerateArray().Select(c => ConsoleChange().Match(c.GetString()!)).Single(m => m.Success).Groups[1].Value;
            restored.Add((name, console, counter.MaxSeq));
            output.WriteLine($"point {i} ({points[i].Run.GetProperty("level").GetString()}): restored through the CLI in {restoreSeconds:F1} s, counter consistent, max seq {counter.MaxSeq}");
        }

        for (var pair = 0; pair < restored.Count; pair += 2)
        {
            clock.Restart();
            var two = restored.Skip(pair).Take(2).ToList();
            foreach (var (name, _, _) in two)
            {
                await Lab.VirshAsync("start", name);
            }

            foreach (var (name, console, maxSeq) in two)
            {
                Assert.Equal(maxSeq + 1, await WaitForStartSeqAsync(console, TimeSpan.FromMinutes(3)));
            }

            output.WriteLine($"booted {string.Join(" and ", two.Select(t => t.Name))}: each counted on from its point's last record + 1, {clock.Elapsed.TotalSeconds:F1} s");
            foreach (var (name, console, _) in two)
            {
                await Lab.LabAsync("vm.sh", "delete", Lab.Name, name);
                File.Delete(console);
            }
        }

        // QEMU killed: the bitmap made at runtime was never stored; libvirt still lists the checkpoint. The next
        // --incremental is refused by libvirt's bitmap check and becomes a full, with the reason.
        KillQemu();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!(await Lab.DomainStateAsync(Guest)).StartsWith("shut off", StringComparison.Ordinal))
        {
            Assert.True(DateTime.UtcNow < deadline, "the guest never stopped after SIGKILL");
            await Task.Delay(200);
        }

        await RestartGuestAsync();
        var after = await BackUpAsync(silo);
        Assert.Equal("full", after.GetProperty("level").GetString());
        Assert.Contains("bitmap", after.GetProperty("level_reason").GetString(), StringComparison.Ordinal);
        output.WriteLine($"after SIGKILL: {after.GetProperty("level_reason").GetString()}");

        // Shut off (QEMU stores its bitmaps in the image at the clean exit), the bitmap removed with qemu-img (formats
        // named), started: libvirt refuses the incremental at the job's start and the run is a full with the reason.
        await Lab.DestroyVmAsync(Guest);
        var disk = Lab.DiskPath(Guest, "vda", "qcow2");
        var checkpoint = "orch-" + after.GetProperty("key").GetString()!.Split('/')[^1];
        var remove = await ProcessRunner.RunAsync("qemu-img", ["bitmap", "--remove", "-f", "qcow2", disk, checkpoint], timeout: TimeSpan.FromMinutes(1));
        Assert.True(remove.ExitCode == 0, ProcessRunner.Describe(remove));
        seq = await RestartGuestAsync();
        var removed = await BackUpAsync(silo);
        Assert.Equal("full", removed.GetProperty("level").GetString());
        Assert.Contains($"bitmap of checkpoint {checkpoint} is missing or inconsistent", removed.GetProperty("level_reason").GetString(), StringComparison.Ordinal);
        output.WriteLine($"after qemu-img bitmap --remove: {removed.GetProperty("level_reason").GetString()}");
        await RestoreAndCheckAsync(silo, removed, "r-nobitmap", seq);

        // VM shut off again, undefined with its checkpoint metadata
        // and defined again from its XML (same uuid), started: libvirt lost the checkpoint, the grain defines it again
        // from the XML it kept, and the next incremental builds on the chain. (A running VM undefined only turns
        // transient and keeps its checkpoints: the shut-off VM is the case where libvirt really loses them.)
        var xml = Path.Combine(_work, "domain.xml");
        Directory.CreateDirectory(_work);
        await File.WriteAllTextAsync(xml, await Lab.VirshAsync("dumpxml", "--inactive", Guest));
        await Lab.DestroyVmAsync(Guest);
        await Lab.VirshAsync("undefine", Guest, "--checkpoints-metadata");
        await Lab.VirshAsync("define", xml);
        Assert.Empty((await Lab.VirshAsync("checkpoint-list", Guest, "--name")).Trim());
        seq = await RestartGuestAsync();
        var redefined = await BackUpAsync(silo);
        Assert.Equal(("incremental", removed.GetProperty("key").GetString()), (redefined.GetProperty("level").GetString(), redefined.GetProperty("parent").GetString()));
        Assert.Contains("defined again from its saved XML", redefined.GetProperty("level_reason").GetString(), StringComparison.Ordinal);
        await RestoreAndCheckAsync(silo, redefined, "r-redef", seq);
        output.WriteLine($"wall time {total.Elapsed.TotalSeconds:F1} s");
    }

    /// <summary>
    /// The shut-off guest started again and counting: its console log (appended to across boots) emptied first, so the
    /// wait sees this boot's records, not the last boot's. Without it the backup that follows could start while the
    /// guest still boots, and after the SIGKILL the disk's ring holds nothing yet: the guest never flushes, so the
    /// records QEMU had not written out when it was killed are gone from the VM's own disk (a volatile write cache
    /// losing power), and the backup rightly copies that.
    /// </summary>
    private async Task<long> RestartGuestAsync()
    {
        await File.WriteAllTextAsync(Lab.ConsolePath(Guest), "");
        await Lab.StartVmAsync(Guest);
        return await Lab.WaitForSeqAsync(Guest, 1);
    }

    /// <summary>orchestrator restore of a run (images only) through the CLI; the image counter-checked from the point on.</summary>
    private async Task RestoreAndCheckAsync(SiloProcess silo, JsonElement run, string suffix, long seqBefore)
    {
        var name = $"{Guest}-{suffix}";
        _restored.Add(name);
        var clock = Stopwatch.StartNew();
        var result = await CliAsync(silo, "restore", run.GetProperty("key").GetString()!, "--as", name);
        var image = Assert.Single(result.GetProperty("images").EnumerateArray()).GetString()!;
        var counter = await CounterCheckQcow2Async(image);
        if (!counter.Consistent)
        {
            // Evidence for the open case (README, bitmap loss): what each layer of the set's chain maps, as qemu-img sees it.
            foreach (var layer in new[] { image, run.GetProperty("disks")[0].GetProperty("backup_path").GetString()! })
            {
                var map = await ProcessRunner.RunAsync("qemu-img", ["map", "--output=json", "-f", "qcow2", layer]);
                output.WriteLine($"qemu-img map {layer}:\n{map.StandardOutput[..Math.Min(map.StandardOutput.Length, 4000)]}");
            }
        }

        Assert.True(counter.Consistent && counter.MaxSeq >= seqBefore, $"{name}: {counter.Json} (guest at {seqBefore} before the run)");
        output.WriteLine($"{run.GetProperty("key").GetString()} ({run.GetProperty("level").GetString()}) restored through the CLI and counter-checked in {clock.Elapsed.TotalSeconds:F1} s, max seq {counter.MaxSeq}");
        await Lab.LabAsync("vm.sh", "delete", Lab.Name, name);
    }

    /// <summary>A restored qcow2 image read as raw (formats named) and counter-checked.</summary>
    private async Task<CounterReport> CounterCheckQcow2Async(string image)
    {
        Directory.CreateDirectory(_work);
        var flat = Path.Combine(_work, $"check-{Guid.NewGuid():N}.raw");
        try
        {
            var convert = await ProcessRunner.RunAsync("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", image, flat], timeout: TimeSpan.FromMinutes(2));
            Assert.True(convert.ExitCode == 0, ProcessRunner.Describe(convert));
            return await Lab.CounterCheckAsync(flat);
        }
        finally
        {
            File.Delete(flat);
        }
    }

    /// <summary>A CLI command with <c>--format json</c> against the silo; its parsed answer (exit 0 asserted).</summary>
    private static async Task<JsonElement> CliAsync(SiloProcess silo, params string[] args)
    {
        var cli = await ProcessRunner.RunAsync("dotnet", [Repo.CliDll, .. args, "--format", "json", "--endpoint", silo.GrpcEndpoint], timeout: TimeSpan.FromMinutes(3));
        Assert.True(cli.ExitCode == 0, ProcessRunner.Describe(cli) + silo.Log);
        using var json = JsonDocument.Parse(cli.StandardOutput);
        return json.RootElement.Clone();
    }

    /// <summary>The seq of the guest's whole "orch: start seq=N interval_ms=" line (it resumes at its disks' highest record + 1).</summary>
    private static async Task<long> WaitForStartSeqAsync(string console, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            if (File.Exists(console))
            {
                using var stream = new FileStream(console, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
                using var reader = new StreamReader(stream);
                var match = StartLine().Match(await reader.ReadToEndAsync());
                if (match.Success)
                {
                    return long.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
                }
            }

            Assert.True(DateTime.UtcNow < deadline, $"{console}: no start line in {timeout.TotalSeconds} s");
            await Task.Delay(250);
        }
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"orch: start seq=(\d+) interval_ms=")]
    private static partial System.Text.RegularExpressions.Regex StartLine();

    [System.Text.RegularExpressions.GeneratedRegex(@"^serial 0: file '[^']*' -> '([^']+)'$")]
    private static partial System.Text.RegularExpressions.Regex ConsoleChange();

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
