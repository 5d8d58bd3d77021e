using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Orchestrator.Grains;
using Orchestrator.Grains.Backups;
using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Simulated;
using Orleans.TestingHost;

namespace Orchestrator.Bench;

/// <summary>
/// Fleet scale on simulated hosts: one silo per host in one process (an in-process Orleans cluster), every VM backed
/// up once per round by (a) a policy run (admission through the fleet grain, run records persisted per change) and
/// (b) the same backups driven directly by the client with the same per-host and fleet limits (semaphores). Same
/// workflow, same copies; the ratio is what the policy machinery costs at fleet scale.
/// </summary>
internal static class FleetBenchmark
{
    private const long MiB = 1L << 20;

    internal sealed record Options(int Rounds, int Hosts, int VmsPerHost, int PerHost, int Fleet, long CopyBytesPerSecond)
    {
        public static Options Parse(string[] args)
        {
            var o = new Options(Rounds: 3, Hosts: 4, VmsPerHost: 25, PerHost: 2, Fleet: 8, CopyBytesPerSecond: 160 * MiB);
            for (var i = 0; i < args.Length; i++)
            {
                var value = i + 1 < args.Length ? args[i + 1] : throw new ArgumentException($"{args[i]} needs a value");
                o = args[i] switch
                {
                    "--rounds" => o with { Rounds = Positive(args[i], value) },
                    "--hosts" => o with { Hosts = Positive(args[i], value) },
                    "--vms-per-host" => o with { VmsPerHost = Positive(args[i], value) },
                    "--per-host" => o with { PerHost = Positive(args[i], value) },
                    "--fleet" => o with { Fleet = Positive(args[i], value) },
                    _ => throw new ArgumentException($"unknown option {args[i]}"),
                };
                i++;
            }

            return o;
        }

        private static int Positive(string name, string value) =>
            int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n > 0 ? n : throw new ArgumentException($"{name}: '{value}' is not a positive integer");
    }

    public static async Task<int> RunAsync(Options o)
    {
        var hosts = Enumerable.Range(1, o.Hosts).Select(i => $"sim-{i:00}").ToArray();
        var root = Path.Combine(Path.GetTempPath(), $"orchestrator-bench-fleet-{Guid.NewGuid():N}");
        var assigned = new Dictionary<string, string>(StringComparer.Ordinal);
        var builder = new InProcessTestClusterBuilder((short)o.Hosts);
        builder.ConfigureSilo((options, silo) =>
        {
            string host;
            lock (assigned)
            {
                host = assigned.TryGetValue(options.SiloName, out var h) ? h : assigned[options.SiloName] = hosts[assigned.Count];
            }

            var hypervisor = new SimulatedHypervisor(new SimulatedOptions { HostName = host, CopyBytesPerSecond = o.CopyBytesPerSecond });
            for (var v = 1; v <= o.VmsPerHost; v++)
            {
                hypervisor.AddDomain($"vm-{v:000}", DomainPowerState.Running, [("vda", "qcow2", 64 * MiB), ("vdb", "qcow2", 64 * MiB)]);
            }

            silo.AddMemoryGrainStorage(StorageNames.Default);
            silo.UseInMemoryReminderService();
            silo.AddOrchestratorGrains(host);
            silo.Services.Configure<BackupOptions>(b =>
            {
                b.Roots = [root];
                b.DefaultTarget = Path.Combine(root, "direct");
            });
            silo.Services.AddSingleton<IHypervisor>(hypervisor);
        });
        await using var cluster = builder.Build();
        await cluster.DeployAsync();
        try
        {
            var grains = cluster.Client;
            foreach (var host in hosts)
            {
                await SyncAsync(grains, host);
            }

            var vms = hosts.SelectMany(h => Enumerable.Range(1, o.VmsPerHost).Select(v => (Host: h, Vm: $"vm-{v:000}"))).ToList();
            var policy = grains.GetGrain<IBackupPolicyGrain>("bench-fleet");
            await policy.ApplyAsync(new PolicySpec
            {
                Name = "bench-fleet",
                Kind = PolicyKind.LiveBackup,
                Selector = new PolicySelector { Hosts = ["sim-*"] },
                Retention = new RetentionPolicy(KeepLast: 2),
                Target = Path.Combine(root, "{host}"),
                Concurrency = new PolicyConcurrency(o.PerHost, o.Fleet),
            });

            Console.WriteLine($"fleet: {o.Hosts} simulated hosts (one silo each, one process) x {o.VmsPerHost} VMs = {vms.Count} VMs, 2 disks each, "
                + $"copy {o.CopyBytesPerSecond / MiB} MiB/s; limits {o.PerHost} per host, {o.Fleet} fleet-wide; {o.Rounds} rounds after a warm-up, order alternating");
            var policyTimes = new List<double>();
            var directTimes = new List<double>();
            var ratios = new List<double>();
            for (var round = 0; round <= o.Rounds; round++)
            {
                double p, d;
                if (round % 2 == 0)
                {
                    p = await PolicyRoundAsync(policy, vms.Count);
                    d = await DirectRoundAsync(grains, vms, o);
                }
                else
                {
                    d = await DirectRoundAsync(grains, vms, o);
                    p = await PolicyRoundAsync(policy, vms.Count);
                }

                if (round == 0)
                {
                    continue;
                }

                policyTimes.Add(p);
                directTimes.Add(d);
                ratios.Add(p / d);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  round {round}: policy run {p:F0} ms, direct {d:F0} ms, ratio {p / d:F2}"));
            }

            var perVmPolicy = policyTimes.Select(t => t / vms.Count).ToList();
            Console.WriteLine($"policy run (whole fleet)   {Stats.Summary(policyTimes)}");
            Console.WriteLine($"direct, same limits        {Stats.Summary(directTimes)}");
            Console.WriteLine($"policy run per VM          {Stats.Summary(perVmPolicy)}");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"ratio policy/direct        {Stats.Median(ratios),8:F2}x  [{ratios.Min(),5:F2} .. {ratios.Max(),5:F2}]"));
            return 0;
        }
        finally
        {
            await cluster.StopAllSilosAsync();
            if (Directory.Exists(root))
            {
                Directory.Delete(root, recursive: true);
            }
        }
    }

    private static async Task<double> PolicyRoundAsync(IBackupPolicyGrain policy, int expected)
    {
        var started = Stopwatch.GetTimestamp();
        var run = await policy.RunNowAsync();
        while (!run.IsTerminal)
        {
            run = await policy.WaitRunAsync(run.RunId, run.Version, TimeSpan.FromSeconds(30));
        }

        var elapsed = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
        if (run.State != PolicyRunState.Completed || run.Targets.Count != expected)
        {
            throw new InvalidOperationException($"policy run {run.RunId} ended {run.State} with {run.Targets.Count} targets: {run.Error}");
        }

        return elapsed;
    }

    private static async Task<double> DirectRoundAsync(IGrainFactory grains, IReadOnlyList<(string Host, string Vm)> vms, Options o)
    {
        var fleet = new SemaphoreSlim(o.Fleet);
        var perHost = vms.Select(v => v.Host).Distinct().ToDictionary(h => h, _ => new SemaphoreSlim(o.PerHost), StringComparer.Ordinal);
        var started = Stopwatch.GetTimestamp();
        await Task.WhenAll(vms.Select(async v =>
        {
            await perHost[v.Host].WaitAsync();
            await fleet.WaitAsync();
            try
            {
                var vm = grains.GetGrain<IVirtualMachineGrain>(GrainKeys.Vm(v.Host, v.Vm));
                var run = await vm.StartBackupAsync(new BackupRequest { Retention = new BackupRetention(2), Policy = "bench-direct" });
                var id = BackupRunKeys.Parse(run.RunKey).RunId;
                while (!run.IsTerminal)
                {
                    run = await vm.WaitBackupAsync(id, run.Version, TimeSpan.FromSeconds(30));
                }

                if (run.Step != BackupStep.Completed)
                {
                    throw new InvalidOperationException($"{run.RunKey} failed: {run.Error}");
                }
            }
            finally
            {
                fleet.Release();
                perHost[v.Host].Release();
            }
        }));
        return Stopwatch.GetElapsedTime(started).TotalMilliseconds;
    }

    private static async Task SyncAsync(IGrainFactory grains, string host)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            try
            {
                await grains.GetGrain<IHostGrain>(host).SyncInventoryAsync();
                return;
            }
            catch (OrchestratorException e) when (e.Code == ErrorCode.HostUnavailable && DateTime.UtcNow < deadline)
            {
                await Task.Delay(100);
            }
        }
    }
}
