using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Grpc.Core;
using Grpc.Net.Client;
using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Libvirt;
using V1 = Orchestrator.Api.V1;

namespace Orchestrator.Bench;

/// <summary>
/// An internal checkpoint (disk + memory) of a running lab guest (qcow2 64M, 128 MiB RAM, writing its counter every
/// 100 ms), taken through the orchestrator against <c>virsh snapshot-create-as DOM NAME</c>, on the same VM in one
/// run. Each round both contenders run once, their order alternating; each checkpoint is deleted again (unmeasured)
/// so every create starts from the same image. Measured: wall time from the request to the answer (gRPC
/// CreateCheckpoint to a silo process serving the lab host; the virsh process from start to exit), and the VM's pause
/// seen from its own Suspended/Resumed lifecycle events on a separate libvirt connection, next to the pause the
/// orchestrator recorded.
/// </summary>
internal static class CheckpointBenchmark
{
    private const string BenchVm = "bench-ck";
    private const string Orchestrated = "orchestrator";
    private const string Virsh = "virsh";
    private static readonly TimeSpan EventGrace = TimeSpan.FromSeconds(3);

    public static async Task<int> RunAsync(BenchOptions options)
    {
        var lab = new LabScripts();
        var work = Path.Combine(lab.LabDir, $"checkpoint-bench-{Environment.ProcessId}");
        BackupBenchmark.BenchSilo? silo = null;
        Console.WriteLine($"lab: host {options.Host}, guest {BenchVm} (scripts {lab.ScriptsDir}, LAB_DIR {lab.LabDir})");
        try
        {
            await lab.ScriptAsync("guest-build.sh");
            var uri = (await lab.ScriptAsync("host.sh", "start", options.Host)).Trim().Split('\n')[^1].Trim();
            await lab.ScriptAsync("vm.sh", "delete", options.Host, BenchVm);
            await lab.ScriptAsync("vm.sh", "create", options.Host, BenchVm, "--disks", "qcow2:64M", "--interval-ms", "100");
            await lab.ScriptAsync("vm.sh", "wait", options.Host, BenchVm, "--seq", "5", "--timeout", "300");

            await using var hv = await LibvirtHypervisor.ConnectAsync(uri);
            var facts = await hv.GetFactsAsync();
            var domain = await hv.GetDomainAsync(BenchVm);
            Console.WriteLine($"{facts.HostName}: libvirt {facts.LibvirtVersion}, QEMU {facts.HypervisorVersion}, {Environment.ProcessorCount} cores; {options.Rounds} rounds; guest {domain.MemoryKiB / 1024} MiB RAM, disk {domain.Disks[0].Target} {domain.Disks[0].Format}");

            var sw = Stopwatch.StartNew();
            Directory.CreateDirectory(work);
            silo = new BackupBenchmark.BenchSilo(BackupBenchmark.SiloDll(), options.Host, uri, Path.Combine(work, "silo"), Path.Combine(work, "backups"));
            silo.Start();
            await silo.WaitReadyAsync(TimeSpan.FromMinutes(3));
            var channel = GrpcChannel.ForAddress(silo.GrpcEndpoint);
            var checkpoints = new V1.CheckpointService.CheckpointServiceClient(channel);
            var fleet = new V1.FleetService.FleetServiceClient(channel);
            var vmKey = $"{options.Host}/{BenchVm}";
            await WaitKnownAsync(fleet, vmKey);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"silo: {Path.GetFileName(Path.GetDirectoryName(Path.GetDirectoryName(BackupBenchmark.SiloDll())))} build, ready and synced in {sw.Elapsed.TotalSeconds:F1} s"));

            var wall = new Dictionary<string, List<double>> { [Orchestrated] = [], [Virsh] = [] };
            var observedPause = new Dictionary<string, List<double>> { [Orchestrated] = [], [Virsh] = [] };
            var recordedPause = new List<double>();
            string[] contenders = [Orchestrated, Virsh];

            // One unmeasured warm-up round (JIT, first gRPC calls, page cache), then the measured rounds.
            for (var round = 0; round <= options.Rounds; round++)
            {
                var label = round == 0 ? "warm-up" : round.ToString(CultureInfo.InvariantCulture);
                for (var i = 0; i < contenders.Length; i++)
                {
                    var contender = contenders[(i + round) % contenders.Length];
                    var name = $"{(contender == Orchestrated ? "o" : "v")}-r{round}";

                    // Let the guest write on between checkpoints, as it would between scheduled ones.
                    await Task.Delay(300);
                    using var pause = new PauseWatch(hv, BenchVm);
                    double ms;
                    string detail;
                    var t = Stopwatch.StartNew();
                    if (contender == Orchestrated)
                    {
                        var created = (await checkpoints.CreateCheckpointAsync(new V1.CreateCheckpointRequest { Key = vmKey, Name = name })).Checkpoint;
                        ms = t.Elapsed.TotalMilliseconds;
                        if (!created.WithMemory || created.PauseSource != V1.PauseSource.Events)
                        {
                            throw new InvalidOperationException($"{name}: with_memory {created.WithMemory}, pause from {created.PauseSource}");
                        }

                        detail = string.Create(CultureInfo.InvariantCulture, $"recorded pause {created.PauseMs,6:F1} ms");
                        if (round > 0)
                        {
                            recordedPause.Add(created.PauseMs);
                        }
                    }
                    else
                    {
                        await lab.RunCheckedAsync("virsh", ["-q", "-c", uri, "snapshot-create-as", BenchVm, name]);
                        ms = t.Elapsed.TotalMilliseconds;
                        detail = "";
                    }

                    var seen = await pause.WaitAsync(EventGrace);
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  round {label,-7} {contender,-12}: {ms,8:F1} ms, pause seen {seen,6:F1} ms  {detail}"));
                    if (round > 0)
                    {
                        wall[contender].Add(ms);
                        observedPause[contender].Add(seen);
                    }

                    // Back to a checkpoint-free image for the next create (unmeasured).
                    await hv.DeleteInternalSnapshotAsync(BenchVm, name);
                    if ((await hv.GetDomainAsync(BenchVm)).State != DomainPowerState.Running)
                    {
                        throw new InvalidOperationException($"{BenchVm} is not running after {name}");
                    }
                }
            }

            Console.WriteLine();
            Console.WriteLine($"median [min .. max] over {options.Rounds} rounds");
            Console.WriteLine("  checkpoint create (disk + memory), request to answer:");
            foreach (var c in contenders)
            {
                Console.WriteLine($"    {c,-32} {Stats.Summary(wall[c])}");
            }

            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"    orchestrator / virsh = {Stats.Median(wall[Orchestrated]) / Stats.Median(wall[Virsh]):F2}x (goal <= 1.05x)"));
            Console.WriteLine("  VM pause per checkpoint (Suspended -> Resumed lifecycle events):");
            Console.WriteLine($"    {"orchestrator, recorded",-32} {Stats.Summary(recordedPause)}");
            foreach (var c in contenders)
            {
                Console.WriteLine($"    {c + ", seen by the bench",-32} {Stats.Summary(observedPause[c])}");
            }
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

            if (Directory.Exists(work))
            {
                Directory.Delete(work, recursive: true);
            }

            if (!options.Keep)
            {
                await lab.ScriptAsync("vm.sh", "delete", options.Host, BenchVm);
            }

            // The lab host is always stopped; --keep keeps its images.
            await lab.ScriptAsync("host.sh", options.Keep ? "stop" : "clean", options.Host);
        }

        return 0;
    }

    private static async Task WaitKnownAsync(V1.FleetService.FleetServiceClient fleet, string vmKey)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(90);
        while (true)
        {
            try
            {
                await fleet.GetVmAsync(new V1.GetVmRequest { Key = vmKey });
                return;
            }
            catch (RpcException e) when (e.StatusCode is StatusCode.NotFound or StatusCode.Unavailable && DateTime.UtcNow < deadline)
            {
                await Task.Delay(100);
            }
        }
    }

    /// <summary>The pause between the domain's first Suspended and the Resumed after it, from libvirt events.</summary>
    private sealed class PauseWatch : IDisposable
    {
        private readonly IHypervisor _hv;
        private readonly string _domain;
        private readonly ConcurrentQueue<DomainEvent> _events = new();
        private readonly TaskCompletionSource _resumed = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public PauseWatch(IHypervisor hv, string domain)
        {
            _hv = hv;
            _domain = domain;
            _hv.DomainEvent += OnEvent;
        }

        public async Task<double> WaitAsync(TimeSpan timeout)
        {
            await _resumed.Task.WaitAsync(timeout);
            var lifecycle = _events.ToList();
            var suspended = lifecycle.First(e => e.Lifecycle == LifecycleEventType.Suspended);
            var resumed = lifecycle.First(e => e.Lifecycle == LifecycleEventType.Resumed && e.At >= suspended.At);
            return (resumed.At - suspended.At).TotalMilliseconds;
        }

        public void Dispose() => _hv.DomainEvent -= OnEvent;

        private void OnEvent(object? sender, DomainEvent e)
        {
            if (e.Domain != _domain || e.Kind != DomainEventKind.Lifecycle)
            {
                return;
            }

            _events.Enqueue(e);
            if (e.Lifecycle == LifecycleEventType.Resumed && _events.Any(x => x.Lifecycle == LifecycleEventType.Suspended))
            {
                _resumed.TrySetResult();
            }
        }
    }
}
