using System.Diagnostics;
using System.Globalization;
using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Libvirt;

namespace Orchestrator.Bench;

/// <summary>
/// The libvirt driver against virsh on one lab guest (vda raw 64M + vdb qcow2 64M, writing every 100 ms), in one run.
/// Each round does both contenders, alternating which goes first: (1) overlays on both disks, atomically;
/// (2) commit both overlays back and pivot (driver: start both, await READY by event, pivot both; virsh: one
/// `blockcommit --active --pivot --wait` per disk, both processes at once). virsh's times include its process start
/// and connection, which is what a script pays on every call; the driver keeps one connection.
/// </summary>
internal static class DriverBenchmark
{
    private const string BenchVm = "bench-vm";

    public static async Task<int> RunAsync(BenchOptions options)
    {
        var lab = new LabScripts();
        string uri;
        string domain;
        if (options.Uri is not null)
        {
            (uri, domain) = (options.Uri, options.Domain!);
        }
        else
        {
            Console.WriteLine($"lab: host {options.Host}, guest {BenchVm} (scripts {lab.ScriptsDir}, LAB_DIR {lab.LabDir})");
            await lab.ScriptAsync("guest-build.sh");
            uri = (await lab.ScriptAsync("host.sh", "start", options.Host)).Trim().Split('\n')[^1].Trim();
            await lab.ScriptAsync("vm.sh", "delete", options.Host, BenchVm);
            await lab.ScriptAsync("vm.sh", "create", options.Host, BenchVm, "--disks", "raw:64M qcow2:64M");
            await lab.ScriptAsync("vm.sh", "wait", options.Host, BenchVm, "--seq", "1", "--timeout", "300");
            domain = BenchVm;
        }

        try
        {
            await using var hv = await LibvirtHypervisor.ConnectAsync(uri);
            var disks = (await hv.GetDomainAsync(domain)).Disks;
            if (disks.Any(d => d.BackingChain.Count > 0))
            {
                throw new InvalidOperationException($"{domain} already runs on overlays: {string.Join(", ", disks.Select(d => d.SourcePath))}");
            }

            var work = Path.Combine(Path.GetDirectoryName(disks[0].SourcePath)!, $"bench-{Environment.ProcessId}");
            Directory.CreateDirectory(work);
            var results = new Dictionary<string, List<double>>();
            void Add(string key, double ms) => (results.TryGetValue(key, out var l) ? l : results[key] = []).Add(ms);

            var facts = await hv.GetFactsAsync();
            Console.WriteLine($"{facts.HostName}: libvirt {facts.LibvirtVersion}, QEMU {facts.HypervisorVersion}, {Environment.ProcessorCount} cores; {options.Rounds} rounds; disks {string.Join(", ", disks.Select(d => $"{d.Target} {d.Format}"))}");

            // One unmeasured warm-up of each, so that first-call costs (QEMU capability cache, JIT) are not counted.
            for (var round = 0; round <= options.Rounds; round++)
            {
                var warmup = round == 0;
                var driverFirst = round % 2 == 1;
                foreach (var contender in driverFirst ? new[] { "driver", "virsh" } : ["virsh", "driver"])
                {
                    var overlays = disks.Select(d => new OverlaySpec(d.Target, Path.Combine(work, $"{d.Target}.{contender}-{round}.qcow2"))).ToList();
                    var (overlayMs, commitMs) = contender == "driver"
                        ? await DriverRoundAsync(hv, domain, overlays, disks)
                        : await VirshRoundAsync(lab, uri, domain, overlays);
                    await VerifyOnBasesAsync(hv, domain, disks);
                    foreach (var o in overlays)
                    {
                        File.Delete(o.OverlayPath);
                    }

                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  round {(warmup ? "warm-up" : round.ToString(CultureInfo.InvariantCulture))} {contender,-6}: overlays {overlayMs,7:F1} ms, commit+pivot {commitMs,7:F1} ms"));
                    if (!warmup)
                    {
                        Add($"{contender}:overlay", overlayMs);
                        Add($"{contender}:commit", commitMs);
                    }
                }
            }

            Console.WriteLine();
            Console.WriteLine($"median [min .. max] over {options.Rounds} rounds, both disks at once:");
            foreach (var (op, label) in new[] { ("overlay", "overlay creation (2 disks, atomic)"), ("commit", "commit + pivot (2 disks)") })
            {
                var driver = results[$"driver:{op}"];
                var virsh = results[$"virsh:{op}"];
                Console.WriteLine($"  {label}");
                Console.WriteLine($"    driver {Stats.Summary(driver)}");
                Console.WriteLine($"    virsh  {Stats.Summary(virsh)}");
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"    virsh / driver = {Stats.Median(virsh) / Stats.Median(driver):F1}x (medians)"));
            }

            Directory.Delete(work, recursive: true);
        }
        finally
        {
            if (options.Uri is null && !options.Keep)
            {
                await lab.ScriptAsync("vm.sh", "delete", options.Host, BenchVm);
                await lab.ScriptAsync("host.sh", "stop", options.Host);
            }
        }

        return 0;
    }

    private static async Task<(double OverlayMs, double CommitMs)> DriverRoundAsync(IHypervisor hv, string domain, IReadOnlyList<OverlaySpec> overlays, IReadOnlyList<DomainDisk> bases)
    {
        var sw = Stopwatch.StartNew();
        await hv.CreateExternalSnapshotAsync(domain, overlays);
        var overlayMs = sw.Elapsed.TotalMilliseconds;
        await Task.Delay(300);

        sw.Restart();
        var phases = await Task.WhenAll(overlays.Select(async o =>
        {
            var t = Stopwatch.StartNew();
            await hv.StartActiveCommitAsync(domain, o.Target, bases.First(d => d.Target == o.Target).SourcePath);
            var started = t.Elapsed.TotalMilliseconds;
            await hv.WaitForBlockJobReadyAsync(domain, o.Target);
            var ready = t.Elapsed.TotalMilliseconds;
            await hv.PivotAsync(domain, o.Target);
            return string.Create(CultureInfo.InvariantCulture, $"{o.Target}: started {started:F0}, ready {ready:F0}, pivoted {t.Elapsed.TotalMilliseconds:F0} ms");
        }));
        var commitMs = sw.Elapsed.TotalMilliseconds;
        Console.WriteLine($"    driver commit phases: {string.Join("; ", phases)}");
        return (overlayMs, commitMs);
    }

    private static async Task<(double OverlayMs, double CommitMs)> VirshRoundAsync(LabScripts lab, string uri, string domain, IReadOnlyList<OverlaySpec> overlays)
    {
        List<string> args = ["-q", "-c", uri, "snapshot-create-as", domain, "--disk-only", "--atomic", "--no-metadata"];
        foreach (var o in overlays)
        {
            args.AddRange(["--diskspec", $"{o.Target},file={o.OverlayPath},driver=qcow2"]);
        }

        var sw = Stopwatch.StartNew();
        await lab.RunCheckedAsync("virsh", args);
        var overlayMs = sw.Elapsed.TotalMilliseconds;
        await Task.Delay(300);

        sw.Restart();
        await Task.WhenAll(overlays.Select(o => lab.RunCheckedAsync("virsh", ["-q", "-c", uri, "blockcommit", domain, o.Target, "--active", "--pivot", "--wait"])));
        return (overlayMs, sw.Elapsed.TotalMilliseconds);
    }

    private static async Task VerifyOnBasesAsync(IHypervisor hv, string domain, IReadOnlyList<DomainDisk> bases)
    {
        var now = await hv.GetDomainAsync(domain);
        foreach (var b in bases)
        {
            var disk = now.Disks.Single(d => d.Target == b.Target);
            if (disk.SourcePath != b.SourcePath || disk.BackingChain.Count != 0 || now.State != DomainPowerState.Running)
            {
                throw new InvalidOperationException($"{domain}/{b.Target} is not back on its base: {disk.SourcePath} ({now.State})");
            }
        }
    }
}
