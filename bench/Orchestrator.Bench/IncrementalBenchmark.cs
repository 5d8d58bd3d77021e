using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Grpc.Core;
using Grpc.Net.Client;
using V1 = Orchestrator.Api.V1;

namespace Orchestrator.Bench;

/// <summary>
/// Incremental backups, orchestrated against virtnbdbackup (Debian's package, pull mode over NBD), side by side on one
/// lab guest in one run. The guest has one qcow2 disk (1 GiB, 512 MiB of random data past its record ring) and the
/// QEMU guest agent, and keeps writing its counter. First a full by each (the orchestrator's first `incremental`
/// request is a full: there is no chain yet; virtnbdbackup `-l full`). Then, each round: the guest rewrites
/// <see cref="ChangedMiB"/> MiB (about 5% of the data) with `dd` through the agent, and the contender takes an
/// incremental: the orchestrator through gRPC (StartBackup with incremental, request to Completed seen on WatchBackup,
/// with its verification), virtnbdbackup `-l inc` (the process, start to exit). virtnbdbackup refuses a VM with a
/// checkpoint it did not make, so the contenders take their chains one after the other on the same VM (the
/// orchestrator's checkpoints deleted in between). Bytes are the lengths of the files that hold the disk's data (the
/// set's images; virtnbdbackup's data file of that level).
/// </summary>
internal static class IncrementalBenchmark
{
    private const string BenchVm = "bench-inc";
    private const long MiB = 1024 * 1024;
    private const int DataMiB = 512;
    private const int ChangedMiB = 26;
    private const string Orchestrated = "orchestrator --incremental";
    private const string Virtnbd = "virtnbdbackup -l inc";

    public static async Task<int> RunAsync(BenchOptions options)
    {
        var lab = new LabScripts();
        var work = Path.Combine(lab.LabDir, $"incremental-bench-{Environment.ProcessId}");
        BackupBenchmark.BenchSilo? silo = null;
        Console.WriteLine($"lab: host {options.Host}, guest {BenchVm} (scripts {lab.ScriptsDir}, LAB_DIR {lab.LabDir})");
        try
        {
            string version;
            try
            {
                version = "virtnbdbackup " + (await lab.RunCheckedAsync("virtnbdbackup", ["--version"])).Trim();
            }
            catch (System.ComponentModel.Win32Exception)
            {
                Console.Error.WriteLine("virtnbdbackup is not installed: apt-get install virtnbdbackup (Debian 12 has 1.9.15)");
                return 2;
            }

            await lab.ScriptAsync("guest-build.sh");
            var uri = (await lab.ScriptAsync("host.sh", "start", options.Host)).Trim().Split('\n')[^1].Trim();
            // virtnbdbackup takes a qemu+unix URI for a remote host (ssh); the same socket as qemu:///system is local.
            var localUri = "qemu:///system?socket=" + uri[(uri.IndexOf("socket=", StringComparison.Ordinal) + "socket=".Length)..];
            await lab.ScriptAsync("vm.sh", "delete", options.Host, BenchVm);
            await lab.ScriptAsync("vm.sh", "create", options.Host, BenchVm, "--disks", "qcow2:1G", "--agent", "--interval-ms", "100", "--no-start");
            var disk = (await lab.ScriptAsync("vm.sh", "disks", options.Host, BenchVm)).Split('\n', StringSplitOptions.RemoveEmptyEntries).Single().Split(' ');
            Directory.CreateDirectory(work);
            await FillAsync(lab, disk[1], work);
            await lab.ScriptAsync("vm.sh", "start", options.Host, BenchVm);
            await lab.ScriptAsync("vm.sh", "wait", options.Host, BenchVm, "--seq", "1", "--timeout", "300");

            var backupRoot = Path.Combine(work, "backups");
            var theirs = Path.Combine(work, "virtnbdbackup");
            Directory.CreateDirectory(backupRoot);
            silo = new BackupBenchmark.BenchSilo(BackupBenchmark.SiloDll(), options.Host, uri, Path.Combine(work, "silo"), backupRoot);
            silo.Start();
            await silo.WaitReadyAsync(TimeSpan.FromMinutes(3));
            var channel = GrpcChannel.ForAddress(silo.GrpcEndpoint);
            var backups = new V1.BackupService.BackupServiceClient(channel);
            var fleet = new V1.FleetService.FleetServiceClient(channel);
            var vmKey = $"{options.Host}/{BenchVm}";
            await WaitVmAsync(fleet, vmKey);
            Console.WriteLine($"{version}; disk vda qcow2 1 GiB with {DataMiB} MiB of data; {options.Rounds} rounds of {ChangedMiB} MiB changed ({ChangedMiB * 100.0 / DataMiB:F1}% of the data)");

            // virtnbdbackup refuses to run while a checkpoint it did not make exists ("Foreign checkpoint found"), so the
            // contenders cannot alternate on one VM: each takes its chain in turn (a full, then one incremental per
            // round after the same kind of change), the orchestrator's checkpoints deleted between the two.
            var times = new Dictionary<string, List<double>> { [Orchestrated] = [], [Virtnbd] = [] };
            var bytes = new Dictionary<string, List<double>> { [Orchestrated] = [], [Virtnbd] = [] };
            var (fullMs, fullBytes, fullRun) = await OrchestratedAsync(backups, vmKey, silo);
            if (fullRun.Level != "full")
            {
                throw new InvalidOperationException($"the first backup of {vmKey} is {fullRun.Level}, not full");
            }

            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  full     {Orchestrated,-28}: {fullMs,8:F0} ms {fullBytes / (double)MiB,8:F2} MiB ({fullRun.LevelReason})"));
            for (var round = 1; round <= options.Rounds; round++)
            {
                await ChangeAsync(lab, uri, round);
                var (ms, b, run) = await OrchestratedAsync(backups, vmKey, silo);
                if (run.Level != "incremental")
                {
                    throw new InvalidOperationException($"round {round}: the orchestrator took a {run.Level}: {run.LevelReason}");
                }

                times[Orchestrated].Add(ms);
                bytes[Orchestrated].Add(b);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  round {round}  {Orchestrated,-28}: {ms,8:F0} ms {b / (double)MiB,8:F2} MiB  parent {run.Parent}"));
            }

            foreach (var checkpoint in (await lab.RunCheckedAsync("virsh", ["-c", uri, "checkpoint-list", BenchVm, "--name"])).Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                await lab.RunCheckedAsync("virsh", ["-c", uri, "checkpoint-delete", BenchVm, checkpoint]);
            }

            var (theirFullMs, theirFullBytes) = await VirtnbdAsync(lab, localUri, theirs, "full", 0);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  full     {"virtnbdbackup -l full",-28}: {theirFullMs,8:F0} ms {theirFullBytes / (double)MiB,8:F2} MiB"));
            for (var round = 1; round <= options.Rounds; round++)
            {
                await ChangeAsync(lab, uri, round + options.Rounds);
                var (ms, b) = await VirtnbdAsync(lab, localUri, theirs, "inc", round);
                times[Virtnbd].Add(ms);
                bytes[Virtnbd].Add(b);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  round {round}  {Virtnbd,-28}: {ms,8:F0} ms {b / (double)MiB,8:F2} MiB  level {round}"));
            }

            Console.WriteLine();
            Console.WriteLine($"median [min .. max] over {options.Rounds} rounds, an incremental after {ChangedMiB} MiB changed:");
            foreach (var c in new[] { Orchestrated, Virtnbd })
            {
                Console.WriteLine($"  {c,-28} {Stats.Summary(times[c])}   {Stats.Summary(bytes[c].Select(x => x / MiB).ToList(), "MiB")}");
            }

            var timeRatio = Stats.Median(times[Orchestrated]) / Stats.Median(times[Virtnbd]);
            var byteRatio = Stats.Median(bytes[Orchestrated]) / Stats.Median(bytes[Virtnbd]);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  time  orchestrator / virtnbdbackup = {timeRatio:F2}x (goal <= 0.5x)"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  bytes orchestrator / virtnbdbackup = {byteRatio:F2}x (goal <= 1.05x)"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"incremental: rounds={options.Rounds} changed_mib={ChangedMiB} time_ratio={timeRatio:F2} bytes_ratio={byteRatio:F2}"));
        }
        catch when (silo is not null)
        {
            Console.Error.WriteLine($"silo log (last lines):\n{silo.LogTail(40)}");
            throw;
        }
        finally
        {
            if (silo is not null)
            {
                await silo.DisposeAsync();
            }

            if (!options.Keep)
            {
                await lab.ScriptAsync("vm.sh", "delete", options.Host, BenchVm);
                await lab.ScriptAsync("host.sh", "clean", options.Host);
                if (Directory.Exists(work))
                {
                    Directory.Delete(work, recursive: true);
                }
            }
        }

        return 0;
    }

    /// <summary>One orchestrated backup with `incremental`: request to Completed; the bytes of the set's disk images.</summary>
    private static async Task<(double Ms, long Bytes, V1.BackupRun Run)> OrchestratedAsync(V1.BackupService.BackupServiceClient backups, string vmKey, BackupBenchmark.BenchSilo silo)
    {
        var sw = Stopwatch.StartNew();
        var started = (await backups.StartBackupAsync(new V1.StartBackupRequest { Vm = vmKey, Incremental = true })).Run;
        V1.BackupRun? run = null;
        using (var watch = backups.WatchBackup(new V1.WatchBackupRequest { Key = started.Key }))
        {
            await foreach (var update in watch.ResponseStream.ReadAllAsync())
            {
                if (update.Run.Step is V1.BackupStep.Completed or V1.BackupStep.Failed)
                {
                    run = update.Run;
                    break;
                }
            }
        }

        while (run is null)
        {
            var now = (await backups.GetBackupAsync(new V1.GetBackupRequest { Key = started.Key })).Run;
            run = now.Step is V1.BackupStep.Completed or V1.BackupStep.Failed ? now : null;
            await Task.Delay(run is null ? 20 : 0);
        }

        var ms = sw.Elapsed.TotalMilliseconds;
        if (run.Step != V1.BackupStep.Completed)
        {
            throw new InvalidOperationException($"backup {run.Key} ended {run.Step}: {run.Error}\n{silo.LogTail(40)}");
        }

        var bytes = run.Disks.Sum(d => new FileInfo(d.BackupPath).Length);
        return (ms, bytes, run);
    }

    /// <summary>virtnbdbackup at a level into its own directory: the process's wall time; the bytes of that level's data file.</summary>
    private static async Task<(double Ms, long Bytes)> VirtnbdAsync(LabScripts lab, string uri, string output, string level, int round)
    {
        var sw = Stopwatch.StartNew();
        await lab.RunCheckedAsync("virtnbdbackup", ["-U", uri, "-d", BenchVm, "-l", level, "-o", output, "-n"]);
        var ms = sw.Elapsed.TotalMilliseconds;
        var pattern = level == "full" ? "vda.full.data" : $"vda.inc.virtnbdbackup.{round.ToString(CultureInfo.InvariantCulture)}.data";
        var file = Path.Combine(output, pattern);
        if (!File.Exists(file))
        {
            throw new InvalidOperationException($"virtnbdbackup wrote no {pattern} in {output}");
        }

        return (ms, new FileInfo(file).Length);
    }

    /// <summary>The guest rewrites <see cref="ChangedMiB"/> MiB of its disk (a copy of other data, O_DIRECT) through the agent.</summary>
    private static async Task ChangeAsync(LabScripts lab, string uri, int round)
    {
        // Data lies from 16 MiB to 16 + DataMiB MiB; each round copies a different region over another.
        var from = 16 + (round * 37 % (DataMiB - ChangedMiB));
        var to = 16 + ((round * 101 + 200) % (DataMiB - ChangedMiB));
        var exec = JsonSerializer.Serialize(new
        {
            execute = "guest-exec",
            arguments = new
            {
                path = "/bin/busybox",
                arg = new[] { "dd", "if=/dev/vda", "of=/dev/vda", "bs=1M", $"count={ChangedMiB}", $"skip={from}", $"seek={to}", "conv=notrunc", "oflag=direct" },
                capture_output = true,
            },
        }).Replace("capture_output", "capture-output", StringComparison.Ordinal);
        var pid = JsonDocument.Parse(await lab.RunCheckedAsync("virsh", ["-c", uri, "qemu-agent-command", BenchVm, exec])).RootElement.GetProperty("return").GetProperty("pid").GetInt32();
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(3);
        while (true)
        {
            var status = JsonDocument.Parse(await lab.RunCheckedAsync("virsh", ["-c", uri, "qemu-agent-command", BenchVm, $"{{\"execute\":\"guest-exec-status\",\"arguments\":{{\"pid\":{pid.ToString(CultureInfo.InvariantCulture)}}}}}"])).RootElement.GetProperty("return");
            if (status.GetProperty("exited").GetBoolean())
            {
                var code = status.GetProperty("exitcode").GetInt32();
                if (code != 0)
                {
                    throw new InvalidOperationException($"dd in the guest exited {code}");
                }

                return;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException("dd in the guest did not finish in 3 minutes");
            }

            await Task.Delay(200);
        }
    }

    private static async Task WaitVmAsync(V1.FleetService.FleetServiceClient fleet, string vmKey)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(90);
        while (true)
        {
            try
            {
                if ((await fleet.GetVmAsync(new V1.GetVmRequest { Key = vmKey })).Vm.Disks.Count == 1)
                {
                    return;
                }
            }
            catch (RpcException e) when (e.StatusCode is StatusCode.NotFound or StatusCode.Unavailable)
            {
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"{vmKey} is not in the inventory");
            }

            await Task.Delay(100);
        }
    }

    /// <summary><see cref="DataMiB"/> MiB of random data from 16 MiB on, written to a raw file and converted to the qcow2 image.</summary>
    private static async Task FillAsync(LabScripts lab, string image, string work)
    {
        var raw = Path.Combine(work, "fill.raw");
        await lab.RunCheckedAsync("truncate", ["-s", "1G", raw]);
        await lab.RunCheckedAsync("dd", ["if=/dev/urandom", $"of={raw}", "bs=1M", $"count={DataMiB.ToString(CultureInfo.InvariantCulture)}", "seek=16", "conv=notrunc", "status=none"]);
        File.Delete(image);
        await lab.RunCheckedAsync("qemu-img", ["convert", "-q", "-f", "raw", "-O", "qcow2", raw, image]);
        File.Delete(raw);
    }
}
