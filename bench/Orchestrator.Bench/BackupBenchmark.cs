using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Grpc.Core;
using Grpc.Net.Client;
using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Libvirt;
using Orchestrator.Hypervisor.QemuImg;
using V1 = Orchestrator.Api.V1;

namespace Orchestrator.Bench;

/// <summary>
/// A whole live backup, orchestrated against hand-run, on one lab guest (vda raw 256M + vdb qcow2 256M, each with
/// 80 MiB of random data, writing its counter every 100 ms), in one run. Each round, contenders rotated:
/// (a) gRPC StartBackup to a silo process serving the lab host, timed from the request to Completed seen on
/// WatchBackup, with verification and with skip_verify; (b) a bash script: virsh snapshot-create-as (both disks,
/// atomic), cp --sparse=always of both bases (and, as a second contender, a sync of the copies), virsh blockcommit
/// --active --pivot --wait per disk, rm the overlays;
/// (c) copy throughput on frozen copies of the same two images: the driver's copy with and without SHA-256 against
/// cp --sparse=always (with and without a sync of the copy). After every backup the domain must run on its bases
/// again and no overlay file may remain.
/// </summary>
internal static class BackupBenchmark
{
    private const string BenchVm = "bench-bk";
    private const long MiB = 1024 * 1024;
    private const int Extents = 20;
    private const string Orchestrated = "orchestrated";
    private const string OrchestratedNoVerify = "orchestrated skip_verify";
    private const string Script = "virsh script";
    private const string ScriptSync = "virsh script + sync";
    private const string DriverSha = "driver copy + sha256";
    private const string DriverCopy = "driver copy";
    private const string DriverData = "driver copy + data digest";
    private const string CpSync = "cp --sparse=always + sync";
    private const string Cp = "cp --sparse=always";
    private const string WindowSuffix = " (overlay window)";

    // The hand-run backup: overlays on all disks at once, copy the frozen bases, commit back + pivot, remove overlays.
    private const string ScriptText = """
        #!/usr/bin/env bash
        # usage: backup.sh URI DOMAIN DEST SYNC (TARGET BASE OVERLAY)...   (SYNC 1: make the copies durable)
        set -euo pipefail
        uri="$1" dom="$2" dest="$3" durable="$4"; shift 4
        targets=() bases=() overlays=() specs=()
        while [ $# -gt 0 ]; do
            targets+=("$1"); bases+=("$2"); overlays+=("$3")
            specs+=(--diskspec "$1,file=$3,driver=qcow2")
            shift 3
        done
        window_start=$(date +%s%N)
        virsh -q -c "$uri" snapshot-create-as "$dom" --disk-only --atomic --no-metadata "${specs[@]}" >/dev/null
        mkdir -p "$dest"
        for i in "${!targets[@]}"; do
            cp --sparse=always "${bases[$i]}" "$dest/${targets[$i]}.${bases[$i]##*.}"
        done
        if [ "$durable" = 1 ]; then sync "$dest"/*; fi
        for t in "${targets[@]}"; do
            virsh -q -c "$uri" blockcommit "$dom" "$t" --active --pivot --wait >/dev/null
        done
        echo "window_ms $(( ($(date +%s%N) - window_start) / 1000000 ))"
        rm -f "${overlays[@]}"
        """;

    public static async Task<int> RunAsync(BenchOptions options)
    {
        var lab = new LabScripts();
        var work = Path.Combine(lab.LabDir, $"backup-bench-{Environment.ProcessId}");
        BenchSilo? silo = null;
        Console.WriteLine($"lab: host {options.Host}, guest {BenchVm} (scripts {lab.ScriptsDir}, LAB_DIR {lab.LabDir})");
        try
        {
            await lab.ScriptAsync("guest-build.sh");
            var uri = (await lab.ScriptAsync("host.sh", "start", options.Host)).Trim().Split('\n')[^1].Trim();
            await lab.ScriptAsync("vm.sh", "delete", options.Host, BenchVm);
            await lab.ScriptAsync("vm.sh", "create", options.Host, BenchVm, "--disks", "raw:256M qcow2:256M", "--interval-ms", "100", "--no-start");
            var images = (await lab.ScriptAsync("vm.sh", "disks", options.Host, BenchVm))
                .Split('\n', StringSplitOptions.RemoveEmptyEntries)
                .Select(l => l.Split(' '))
                .Select(f => (Target: f[0], Path: f[1], Format: f[2]))
                .ToList();

            // Random data beyond the guest's record ring (first 256 KiB), so the copies are not trivial; frozen copies
            // of the filled images are the sources of the copy contenders.
            Directory.CreateDirectory(work);
            var sources = new List<(string Path, string Format)>();
            foreach (var image in images)
            {
                await FillAsync(lab, image.Path, image.Format, work);
                var source = Path.Combine(work, $"source-{image.Target}.{image.Format}");
                await lab.RunCheckedAsync("cp", ["--sparse=always", image.Path, source]);
                sources.Add((source, image.Format));
            }

            await lab.ScriptAsync("vm.sh", "start", options.Host, BenchVm);
            await lab.ScriptAsync("vm.sh", "wait", options.Host, BenchVm, "--seq", "1", "--timeout", "300");

            await using var hv = await LibvirtHypervisor.ConnectAsync(uri);
            var bases = (await hv.GetDomainAsync(BenchVm)).Disks;
            var diskImages = new QemuImgDiskImages();
            long allocated = 0;
            var described = new List<string>();
            foreach (var d in bases)
            {
                var info = await diskImages.InfoAsync(d.SourcePath, d.Format);
                allocated += info.ActualSize;
                described.Add(string.Create(CultureInfo.InvariantCulture, $"{d.Target} {d.Format} {info.VirtualSize / MiB} MiB ({info.ActualSize / (double)MiB:F1} MiB allocated)"));
            }

            var facts = await hv.GetFactsAsync();
            Console.WriteLine($"{facts.HostName}: libvirt {facts.LibvirtVersion}, QEMU {facts.HypervisorVersion}, {Environment.ProcessorCount} cores; {options.Rounds} rounds; disks {string.Join(", ", described)}");

            var backupRoot = Path.Combine(work, "backups");
            Directory.CreateDirectory(backupRoot);
            var sw = Stopwatch.StartNew();
            silo = new BenchSilo(SiloDll(), options.Host, uri, Path.Combine(work, "silo"), backupRoot);
            silo.Start();
            await silo.WaitReadyAsync(TimeSpan.FromMinutes(3));
            var channel = GrpcChannel.ForAddress(silo.GrpcEndpoint);
            var fleet = new V1.FleetService.FleetServiceClient(channel);
            var backups = new V1.BackupService.BackupServiceClient(channel);
            var vmKey = $"{options.Host}/{BenchVm}";
            await WaitInventoryOnBasesAsync(fleet, vmKey, bases.Count);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"silo: {Path.GetFileName(Path.GetDirectoryName(Path.GetDirectoryName(SiloDll())))} build, ready and synced in {sw.Elapsed.TotalSeconds:F1} s; backup root {backupRoot}"));

            var scriptPath = Path.Combine(work, "backup.sh");
            await File.WriteAllTextAsync(scriptPath, ScriptText.Replace("\r", "", StringComparison.Ordinal) + "\n");
            var results = new Dictionary<string, List<double>>();
            void Add(string key, double value) => (results.TryGetValue(key, out var l) ? l : results[key] = []).Add(value);

            var backupContenders = new[] { Orchestrated, OrchestratedNoVerify, Script, ScriptSync };
            var copyContenders = new (string Name, Func<(string Path, string Format), string, Task> Copy)[]
            {
                (DriverSha, (s, d) => diskImages.CopyAsync(s.Path, s.Format, d, new CopyOptions())),
                (DriverCopy, (s, d) => diskImages.CopyAsync(s.Path, s.Format, d, new CopyOptions { ComputeSha256 = false })),
                (DriverData, (s, d) => diskImages.CopyAsync(s.Path, s.Format, d, new CopyOptions { ComputeSha256 = false, ComputeDataSha256 = true })),
                (CpSync, async (s, d) =>
                {
                    await lab.RunCheckedAsync("cp", ["--sparse=always", s.Path, d]);
                    await lab.RunCheckedAsync("sync", [d]);
                }),
                (Cp, (s, d) => lab.RunCheckedAsync("cp", ["--sparse=always", s.Path, d])),
            };
            long sourceBytes = 0;
            foreach (var s in sources)
            {
                sourceBytes += (await diskImages.InfoAsync(s.Path, s.Format)).ActualSize;
            }

            // One unmeasured warm-up round (JIT, first gRPC calls, page cache), then the measured rounds.
            for (var round = 0; round <= options.Rounds; round++)
            {
                var label = round == 0 ? "warm-up" : round.ToString(CultureInfo.InvariantCulture);
                for (var i = 0; i < backupContenders.Length; i++)
                {
                    var contender = backupContenders[(i + round) % backupContenders.Length];
                    double ms, window;
                    string detail;
                    if (contender is Script or ScriptSync)
                    {
                        (ms, window, detail) = await ScriptRoundAsync(lab, scriptPath, uri, work, bases, round, durable: contender == ScriptSync);
                    }
                    else
                    {
                        await WaitInventoryOnBasesAsync(fleet, vmKey, bases.Count);
                        (ms, window, detail) = await OrchestratedRoundAsync(backups, vmKey, skipVerify: contender == OrchestratedNoVerify, silo);
                    }

                    await VerifyOnBasesAsync(hv, bases);
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  round {label} {contender,-24}: {ms,8:F1} ms  {detail}"));
                    if (round > 0)
                    {
                        Add(contender, ms);
                        Add(contender + WindowSuffix, window);
                    }
                }

                for (var i = 0; i < copyContenders.Length; i++)
                {
                    var (name, copy) = copyContenders[(i + round) % copyContenders.Length];
                    var destinations = sources.Select(s => Path.Combine(work, "copy-" + Path.GetFileName(s.Path))).ToList();
                    var t = Stopwatch.StartNew();
                    for (var k = 0; k < sources.Count; k++)
                    {
                        await copy(sources[k], destinations[k]);
                    }

                    var mibPerSecond = sourceBytes / (double)MiB / t.Elapsed.TotalSeconds;
                    destinations.ForEach(File.Delete);
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  round {label} {name,-24}: {t.Elapsed.TotalMilliseconds,8:F1} ms  {mibPerSecond,7:F1} MiB/s"));
                    if (round > 0)
                    {
                        Add(name, mibPerSecond);
                    }
                }
            }

            Console.WriteLine();
            Console.WriteLine($"median [min .. max] over {options.Rounds} rounds");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  whole live backup of both disks ({allocated / (double)MiB:F1} MiB allocated), request to done:"));
            foreach (var c in backupContenders)
            {
                Console.WriteLine($"    {c,-26} {Stats.Summary(results[c])}");
            }

            Console.WriteLine("  time the VM runs on overlays (snapshot to the last pivot):");
            foreach (var c in backupContenders)
            {
                Console.WriteLine($"    {c,-26} {Stats.Summary(results[c + WindowSuffix])}");
            }

            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"    orchestrated / script             = {Stats.Median(results[Orchestrated + WindowSuffix]) / Stats.Median(results[Script + WindowSuffix]):F2}x"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"    orchestrated / script + sync      = {Stats.Median(results[Orchestrated + WindowSuffix]) / Stats.Median(results[ScriptSync + WindowSuffix]):F2}x"));
            var script = Stats.Median(results[Script]);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"    orchestrated / script             = {Stats.Median(results[Orchestrated]) / script:F2}x (goal <= 1.0x)"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"    orchestrated skip_verify / script = {Stats.Median(results[OrchestratedNoVerify]) / script:F2}x"));
            var scriptSync = Stats.Median(results[ScriptSync]);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"    orchestrated / script + sync      = {Stats.Median(results[Orchestrated]) / scriptSync:F2}x (both leave durable copies)"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"    orchestrated skip_verify / script + sync = {Stats.Median(results[OrchestratedNoVerify]) / scriptSync:F2}x"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  copy throughput, both frozen images one after the other ({sourceBytes / (double)MiB:F1} MiB allocated):"));
            foreach (var (name, _) in copyContenders)
            {
                Console.WriteLine($"    {name,-26} {Stats.Summary(results[name], "MiB/s")}");
            }

            var cpSync = Stats.Median(results[CpSync]);
            var cp = Stats.Median(results[Cp]);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"    driver copy + sha256 / cp + sync = {Stats.Median(results[DriverSha]) / cpSync:F2}x (goal >= 0.9x); / cp without sync = {Stats.Median(results[DriverSha]) / cp:F2}x"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"    driver copy + data digest / cp + sync = {Stats.Median(results[DriverData]) / cpSync:F2}x (what a backup copies with now)"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"    driver copy / cp + sync          = {Stats.Median(results[DriverCopy]) / cpSync:F2}x; / cp without sync = {Stats.Median(results[DriverCopy]) / cp:F2}x"));
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
                if (Directory.Exists(work))
                {
                    Directory.Delete(work, recursive: true);
                }

                await lab.ScriptAsync("vm.sh", "delete", options.Host, BenchVm);
                await lab.ScriptAsync("host.sh", "clean", options.Host);
            }
        }

        return 0;
    }

    /// <summary>One orchestrated backup: from StartBackup to Completed seen on WatchBackup; the set is removed after.</summary>
    private static async Task<(double Ms, double WindowMs, string Detail)> OrchestratedRoundAsync(V1.BackupService.BackupServiceClient backups, string vmKey, bool skipVerify, BenchSilo silo)
    {
        var sw = Stopwatch.StartNew();
        var started = (await backups.StartBackupAsync(new V1.StartBackupRequest { Vm = vmKey, SkipVerify = skipVerify })).Run;
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

        // The stream ended without an end state (it should not): poll.
        while (run is null)
        {
            var now = (await backups.GetBackupAsync(new V1.GetBackupRequest { Key = started.Key })).Run;
            if (now.Step is V1.BackupStep.Completed or V1.BackupStep.Failed)
            {
                run = now;
            }
            else
            {
                await Task.Delay(20);
            }
        }

        var ms = sw.Elapsed.TotalMilliseconds;
        if (run.Step != V1.BackupStep.Completed)
        {
            throw new InvalidOperationException($"backup {run.Key} ended {run.Step}: {run.Error}\n{silo.LogTail(40)}");
        }

        if (run.Disks.Any(d => !d.Committed || (!skipVerify && !d.Verified) || d.Sha256.Length == 0))
        {
            throw new InvalidOperationException($"backup {run.Key} completed but a disk is not committed/verified/hashed");
        }

        Directory.Delete(run.BackupSetPath, recursive: true);
        var window = OverlayWindowMs(run);
        return (ms, window, string.Create(CultureInfo.InvariantCulture, $"overlay window {window:F0} ms, steps {StepDurations(run)}"));
    }

    /// <summary>
    /// How long the VM ran on overlays: from the step that creates them (Quiesce: the snapshot starts right after it
    /// is recorded) to the first Cleaning record (every disk committed and pivoted back to its base).
    /// </summary>
    private static double OverlayWindowMs(V1.BackupRun run)
    {
        var start = run.Steps.First(s => s.Step == V1.BackupStep.Quiesce).At.ToDateTimeOffset();
        var end = run.Steps.First(s => s.Step == V1.BackupStep.Cleaning).At.ToDateTimeOffset();
        return (end - start).TotalMilliseconds;
    }

    /// <summary>Time spent in each step, from the run's step records: "Preflight 12, OverlayActive 140, ...".</summary>
    private static string StepDurations(V1.BackupRun run)
    {
        var steps = run.Steps.ToList();
        var parts = new List<string>();
        for (var i = 0; i + 1 < steps.Count; i++)
        {
            var ms = (steps[i + 1].At.ToDateTimeOffset() - steps[i].At.ToDateTimeOffset()).TotalMilliseconds;
            parts.Add(string.Create(CultureInfo.InvariantCulture, $"{Short(steps[i].Step)} {ms:F0}"));
        }

        return string.Join(", ", parts);

        static string Short(V1.BackupStep s) => s switch
        {
            V1.BackupStep.Admitted => "admit",
            V1.BackupStep.Preflight => "preflight",
            V1.BackupStep.Quiesce => "overlays",
            V1.BackupStep.OverlayActive => "active",
            V1.BackupStep.Copying => "copy",
            V1.BackupStep.Committing => "commit",
            V1.BackupStep.Cleaning => "clean",
            V1.BackupStep.Verifying => "verify",
            V1.BackupStep.Queued => "queued",
            _ => s.ToString(),
        };
    }

    private static async Task<(double Ms, double WindowMs, string Detail)> ScriptRoundAsync(LabScripts lab, string scriptPath, string uri, string work, IReadOnlyList<DomainDisk> bases, int round, bool durable)
    {
        var dest = Path.Combine(work, "script-backups", $"r{round}{(durable ? "-sync" : "")}");
        List<string> args = [scriptPath, uri, BenchVm, dest, durable ? "1" : "0"];
        foreach (var b in bases)
        {
            args.AddRange([b.Target, b.SourcePath, $"{b.SourcePath}.script-{round}{(durable ? "s" : "")}.qcow2"]);
        }

        var sw = Stopwatch.StartNew();
        var output = await lab.RunCheckedAsync("bash", args);
        var ms = sw.Elapsed.TotalMilliseconds;
        var copied = Directory.GetFiles(dest).Length;
        Directory.Delete(dest, recursive: true);
        var window = double.Parse(output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Single(l => l.StartsWith("window_ms ", StringComparison.Ordinal))["window_ms ".Length..], CultureInfo.InvariantCulture);
        return (ms, window, $"{copied} copies, overlay window {window:F0} ms");
    }

    /// <summary>The domain runs on its bases again (no backing chain) and no overlay file is left beside them.</summary>
    private static async Task VerifyOnBasesAsync(IHypervisor hv, IReadOnlyList<DomainDisk> bases)
    {
        var now = await hv.GetDomainAsync(BenchVm);
        if (now.State != DomainPowerState.Running)
        {
            throw new InvalidOperationException($"{BenchVm} is {now.State}");
        }

        foreach (var b in bases)
        {
            var disk = now.Disks.Single(d => d.Target == b.Target);
            if (disk.SourcePath != b.SourcePath || disk.BackingChain.Count != 0)
            {
                throw new InvalidOperationException($"{BenchVm}/{b.Target} is not back on its base: {disk.SourcePath}");
            }

            var dir = Path.GetDirectoryName(b.SourcePath)!;
            var name = Path.GetFileName(b.SourcePath);
            // Overlays are named <base>.<something>.qcow2 (the orchestrator's .orch-<run>, the script's .script-<round>).
            var left = Directory.GetFiles(dir)
                .Where(f => Path.GetFileName(f).StartsWith(name + ".", StringComparison.Ordinal) && f.EndsWith(".qcow2", StringComparison.Ordinal))
                .ToList();
            if (left.Count > 0)
            {
                throw new InvalidOperationException($"overlay files left: {string.Join(", ", left)}");
            }
        }
    }

    /// <summary>Polls the silo until the VM's inventory shows every disk on its base (chain depth 1).</summary>
    private static async Task WaitInventoryOnBasesAsync(V1.FleetService.FleetServiceClient fleet, string vmKey, int disks)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(90);
        while (true)
        {
            try
            {
                var vm = (await fleet.GetVmAsync(new V1.GetVmRequest { Key = vmKey })).Vm;
                if (vm.Disks.Count == disks && vm.Disks.All(d => d.ChainDepth == 1))
                {
                    return;
                }
            }
            catch (RpcException e) when (e.StatusCode is StatusCode.NotFound or StatusCode.Unavailable)
            {
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"inventory of {vmKey} does not show its disks on their bases");
            }

            await Task.Delay(100);
        }
    }

    /// <summary>
    /// Writes <see cref="Extents"/> extents of 4 MiB of random data, every 12 MiB from 16 MiB on (past the guest's
    /// record ring), into a fresh image. qcow2: written to a sparse raw file first, then converted.
    /// </summary>
    private static async Task FillAsync(LabScripts lab, string image, string format, string work)
    {
        var size = new FileInfo(image).Length;
        var raw = format == "raw" ? image : Path.Combine(work, "fill.raw");
        if (format != "raw")
        {
            size = 256 * MiB;
        }

        await using (var f = new FileStream(raw, FileMode.OpenOrCreate, FileAccess.Write))
        {
            f.SetLength(Math.Max(f.Length, size));
            for (var i = 0; i < Extents; i++)
            {
                f.Position = (16 * MiB) + (i * 12 * MiB);
                await f.WriteAsync(RandomNumberGenerator.GetBytes((int)(4 * MiB)));
            }

            f.Flush(flushToDisk: true);
        }

        if (format != "raw")
        {
            File.Delete(image);
            await lab.RunCheckedAsync("qemu-img", ["convert", "-q", "-f", "raw", "-O", format, raw, image]);
            File.Delete(raw);
        }
    }

    /// <summary>The built silo: this benchmark's configuration first, then Release, then Debug.</summary>
    internal static string SiloDll()
    {
        var repo = new DirectoryInfo(new LabScripts().ScriptsDir).Parent!.Parent!.FullName;
        var own = new DirectoryInfo(AppContext.BaseDirectory).Parent?.Name;
        foreach (var configuration in new[] { own, "Release", "Debug" }.OfType<string>().Distinct())
        {
            var path = Path.Combine(repo, "silo", "Orchestrator.Silo", "bin", configuration, "net10.0", "Orchestrator.Silo.dll");
            if (File.Exists(path))
            {
                return path;
            }
        }

        throw new FileNotFoundException("Orchestrator.Silo.dll not built: dotnet build -c Release silo/Orchestrator.Silo");
    }

    /// <summary>A silo process serving one lab host (libvirt), backing up under one root; SQLite in its work dir.</summary>
    internal sealed class BenchSilo(string dll, string host, string uri, string workDir, string backupRoot) : IAsyncDisposable
    {
        private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(5) };
        private readonly StringBuilder _log = new();
        private readonly int _grpcPort = FreePort();
        private readonly int _httpPort = FreePort();
        private Process? _process;

        public string GrpcEndpoint => $"http://127.0.0.1:{_grpcPort}";

        public void Start()
        {
            Directory.CreateDirectory(workDir);
            var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = workDir };
            info.ArgumentList.Add(dll);
            var env = new Dictionary<string, string>
            {
                ["Orchestrator__Host__Name"] = host,
                ["Orchestrator__Host__Uri"] = uri,
                ["Orchestrator__Host__SeedDemo"] = "false",
                ["Orchestrator__Persistence__SqlitePath"] = Path.Combine(workDir, "orchestrator.db"),
                ["Orchestrator__Cluster__SiloPort"] = Port(FreePort()),
                ["Orchestrator__Endpoints__GrpcPort"] = Port(_grpcPort),
                ["Orchestrator__Endpoints__HttpPort"] = Port(_httpPort),
                ["Orchestrator__Endpoints__Dashboard"] = "false",
                ["Orchestrator__Backup__Roots__0"] = backupRoot,
                ["Orchestrator__Backup__DefaultTarget"] = backupRoot,
                ["Logging__LogLevel__Default"] = "Warning",
            };
            foreach (var (key, value) in env)
            {
                info.Environment[key] = value;
            }

            _process = Process.Start(info) ?? throw new InvalidOperationException("cannot start the silo");
            _process.OutputDataReceived += (_, e) => Append(e.Data);
            _process.ErrorDataReceived += (_, e) => Append(e.Data);
            _process.BeginOutputReadLine();
            _process.BeginErrorReadLine();
        }

        public async Task WaitReadyAsync(TimeSpan timeout)
        {
            var deadline = DateTime.UtcNow + timeout;
            while (DateTime.UtcNow < deadline)
            {
                if (_process is null || _process.HasExited)
                {
                    throw new InvalidOperationException($"silo exited:\n{LogTail(40)}");
                }

                try
                {
                    if (await Http.GetStringAsync($"http://127.0.0.1:{_httpPort}/health/ready") == "Healthy")
                    {
                        return;
                    }
                }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
                {
                }

                await Task.Delay(200);
            }

            throw new TimeoutException($"silo not ready in time:\n{LogTail(40)}");
        }

        public string LogTail(int lines)
        {
            lock (_log)
            {
                return string.Join('\n', _log.ToString().Split('\n').TakeLast(lines));
            }
        }

        public async ValueTask DisposeAsync()
        {
            if (_process is { HasExited: false } p)
            {
                p.Kill(entireProcessTree: true);
                await p.WaitForExitAsync();
            }

            _process?.Dispose();
        }

        private static string Port(int port) => port.ToString(CultureInfo.InvariantCulture);

        private static int FreePort()
        {
            using var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            return ((IPEndPoint)listener.LocalEndpoint).Port;
        }

        private void Append(string? line)
        {
            if (line is null)
            {
                return;
            }

            lock (_log)
            {
                _log.AppendLine(line);
            }
        }
    }
}
