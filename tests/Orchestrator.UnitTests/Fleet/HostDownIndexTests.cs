using Microsoft.Extensions.DependencyInjection;
using Orchestrator.Grains.Fleet;
using Orchestrator.Hypervisor;

namespace Orchestrator.UnitTests.Fleet;

/// <summary>
/// Two silos, hd-a and hd-b, with protection flushes so slow that only deactivation stores them. hd-b's silo stops:
/// its shard is still read (on the other silo), so a policy run can still select (and skip) its VMs and compliance
/// still lists them, with the time that was only in memory when the silo stopped.
/// </summary>
public sealed class HostDownIndexTests
{
    private const long MiB = 1L << 20;

    [Fact]
    public async Task HostSiloStopped_ItsShardIsStillReadable_WithTheTimesItHeldInMemory()
    {
        await using var index = await IndexCluster.StartAsync(["hd-a", "hd-b"], o =>
        {
            o.ProtectionFlushQuietDelay = TimeSpan.FromMinutes(5);
            o.ProtectionFlushMaxDelay = TimeSpan.FromMinutes(10);
        });
        index.Hypervisors["hd-a"].AddDomain("a1", DomainPowerState.Running, [("vda", "qcow2", 64 * MiB)], new Dictionary<string, string> { ["tier"] = "web" });
        index.Hypervisors["hd-b"].AddDomain("b1", DomainPowerState.Running, [("vda", "qcow2", 64 * MiB)], new Dictionary<string, string> { ["tier"] = "web" });
        index.Hypervisors["hd-b"].AddDomain("b2", DomainPowerState.ShutOff, [("vda", "qcow2", 64 * MiB)], new Dictionary<string, string> { ["tier"] = "db" });
        await index.SyncAsync("hd-a");
        await index.SyncAsync("hd-b");
        await index.Fleet.RegisterPolicyAsync(IndexCluster.Policy("hd-web", PolicyKind.LiveBackup, IndexCluster.ByLabel("tier", "web"), TimeSpan.FromHours(1)));

        // As the VM grain reports a finished backup: batched, so not in storage yet.
        var at = DateTimeOffset.UtcNow;
        var shardB = index.Grains.GetGrain<IHostIndexGrain>("hd-b");
        await shardB.RecordProtectionAsync("b1", PolicyKind.LiveBackup, at);
        Assert.Null(index.Storage.Read<HostIndexState>("hostindex", shardB.GetGrainId())!.Vms["b1"].LastBackupAt);

        await index.Cluster.StopSiloAsync(index.SiloOf("hd-b"));
        await index.Cluster.WaitForLivenessToStabilizeAsync();

        // The VM itself is unreachable (host-affine) ...
        var e = await Assert.ThrowsAsync<OrchestratorException>(() => index.Grains.GetGrain<IVirtualMachineGrain>("hd-b/b1").GetAsync());
        Assert.Equal(ErrorCode.HostUnavailable, e.Code);

        // ... but the index still selects and lists it, with the time stored when its shard deactivated.
        Assert.Equal(["hd-a/a1", "hd-b/b1"], (await index.Fleet.SelectAsync(IndexCluster.ByLabel("tier", "web"))).Select(v => v.Key));
        var compliance = await index.Fleet.GetComplianceAsync();
        Assert.Equal(["hd-a/a1", "hd-b/b1", "hd-b/b2"], compliance.Select(c => c.Key));
        var b1 = compliance.Single(c => c.Key == "hd-b/b1");
        Assert.Equal(ComplianceStatus.Ok, b1.Status);
        Assert.Equal(at, b1.LastBackupAt);
        Assert.Equal(ComplianceStatus.Never, compliance.Single(c => c.Key == "hd-a/a1").Status);
        Assert.Equal(3, (await index.Fleet.ListVmsAsync()).Count);
    }

    [Fact]
    public async Task HostSync_CallsAtMostInventoryFanOutVmGrainsAtOnce_AndWritesNothingWhenNothingChanged()
    {
        await using var index = await IndexCluster.StartAsync(["fo-a"], o => o.InventoryFanOut = 3, silo => silo.AddIncomingGrainCallFilter(ApplyInventoryProbe.FilterAsync));
        for (var i = 0; i < 40; i++)
        {
            index.Hypervisors["fo-a"].AddDomain($"v{i:D2}", DomainPowerState.Running, [("vda", "qcow2", 64 * MiB)], new Dictionary<string, string>());
        }

        ApplyInventoryProbe.Reset();
        await index.SyncAsync("fo-a");
        Assert.Equal(40, ApplyInventoryProbe.Calls);
        Assert.InRange(ApplyInventoryProbe.MaxInFlight, 1, 3);
        Assert.Equal(40, (await index.Grains.GetGrain<IHostGrain>("fo-a").ListVmsAsync()).Count);

        var shard = index.Grains.GetGrain<IHostIndexGrain>("fo-a").GetGrainId();
        var vm = index.Grains.GetGrain<IVirtualMachineGrain>("fo-a/v07").GetGrainId();
        var (shardWrites, vmWrites) = (index.Storage.Writes("hostindex", shard), index.Storage.Writes("vm", vm));
        Assert.Equal(1, shardWrites);

        // A sync that finds nothing new writes neither the VMs nor the index.
        await index.SyncAsync("fo-a");
        Assert.Equal(shardWrites, index.Storage.Writes("hostindex", shard));
        Assert.Equal(vmWrites, index.Storage.Writes("vm", vm));
    }

    /// <summary>Counts ApplyInventory calls in flight on VM grains (each held 20 ms, so unbounded calls would overlap).</summary>
    private static class ApplyInventoryProbe
    {
        private static int _inFlight;
        private static int _max;
        private static int _calls;

        public static int MaxInFlight => Volatile.Read(ref _max);

        public static int Calls => Volatile.Read(ref _calls);

        public static void Reset() => (_inFlight, _max, _calls) = (0, 0, 0);

        public static async Task FilterAsync(IIncomingGrainCallContext context)
        {
            if (context.Grain is not IVirtualMachineGrain || context.MethodName != nameof(IVirtualMachineGrain.ApplyInventoryAsync))
            {
                await context.Invoke();
                return;
            }

            var now = Interlocked.Increment(ref _inFlight);
            Interlocked.Increment(ref _calls);
            int seen;
            while (now > (seen = Volatile.Read(ref _max)) && Interlocked.CompareExchange(ref _max, now, seen) != seen)
            {
            }

            try
            {
                await Task.Delay(20);
                await context.Invoke();
            }
            finally
            {
                Interlocked.Decrement(ref _inFlight);
            }
        }
    }
}
