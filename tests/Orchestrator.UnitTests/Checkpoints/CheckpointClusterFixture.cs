using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Orchestrator.Grains;
using Orchestrator.Grains.Checkpoints;
using Orchestrator.Grains.VirtualMachines;
using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Simulated;
using Orleans.Storage;
using Orleans.TestingHost;

namespace Orchestrator.UnitTests.Checkpoints;

/// <summary>
/// Two silos with in-memory reminders, each serving one simulated host. <see cref="RealHost"/> runs on the system
/// clock and its VMs pause for real while a checkpoint saves memory. <see cref="FakeHost"/> runs schedules (and its
/// hypervisor's timestamps) on <see cref="Clock"/>, a fake clock the tests move; its grain timers look at the
/// schedule every 50 ms, so moving the clock is noticed at once.
/// </summary>
public sealed class CheckpointClusterFixture : IAsyncLifetime
{
    public const string RealHost = "ckr-01";
    public const string FakeHost = "ckf-01";
    public const long GiB = 1L << 30;

    private readonly Cluster.SiloHosts _siloHosts = new([RealHost, FakeHost]);

    public CheckpointClusterFixture()
    {
        Real = new SimulatedHypervisor(new SimulatedOptions { HostName = RealHost, InternalSnapshotPause = TimeSpan.FromMilliseconds(40) });
        Fake = new SimulatedHypervisor(new SimulatedOptions { HostName = FakeHost, InternalSnapshotPause = TimeSpan.Zero, SnapshotLatency = TimeSpan.Zero }, Clock);

        Real.AddDomain("run-1", DomainPowerState.Running, [("vda", "qcow2", 20 * GiB), ("vdb", "qcow2", 4 * GiB)]);
        Real.AddDomain("off-1", DomainPowerState.ShutOff, [("vda", "qcow2", 20 * GiB)]);
        Real.AddDomain("off-2", DomainPowerState.ShutOff, [("vda", "qcow2", 20 * GiB)]);
        Real.AddDomain("rev-1", DomainPowerState.Running, [("vda", "qcow2", 20 * GiB)]);
        Real.AddDomain("del-1", DomainPowerState.Running, [("vda", "qcow2", 20 * GiB)]);
        Real.AddDomain("raw-1", DomainPowerState.Running, [("vda", "qcow2", 20 * GiB), ("vdb", "raw", 4 * GiB)]);
        Real.AddDomain("ovl-1", DomainPowerState.Running, [("vda", "qcow2", 20 * GiB)]);
        Real.AddDomain("ext-1", DomainPowerState.Running, [("vda", "qcow2", 20 * GiB)]);
        Real.AddDomain("dup-1", DomainPowerState.Running, [("vda", "qcow2", 20 * GiB)]);
        Real.AddDomain("tel-1", DomainPowerState.Running, [("vda", "qcow2", 20 * GiB)]);
        Real.AddDomain("list-1", DomainPowerState.Running, [("vda", "qcow2", 20 * GiB)]);
        Real.AddDomain("unnamed-twice", DomainPowerState.Running, [("vda", "qcow2", 20 * GiB)]);

        Fake.AddDomain("sch-set", DomainPowerState.Running, [("vda", "qcow2", 20 * GiB)]);
        Fake.AddDomain("sch-run", DomainPowerState.Running, [("vda", "qcow2", 20 * GiB)]);
        Fake.AddDomain("sch-catch", DomainPowerState.Running, [("vda", "qcow2", 20 * GiB)]);
        Fake.AddDomain("sch-del", DomainPowerState.ShutOff, [("vda", "qcow2", 20 * GiB)]);
        Fake.AddDomain("sch-raw", DomainPowerState.Running, [("vda", "raw", 20 * GiB)]);
        Fake.AddDomain("sch-ovl", DomainPowerState.Running, [("vda", "qcow2", 20 * GiB)]);
    }

    public FakeTimeProvider Clock { get; } = new(new DateTimeOffset(2025, 3, 1, 10, 17, 30, TimeSpan.Zero));

    public SimulatedHypervisor Real { get; }

    public SimulatedHypervisor Fake { get; }

    public InProcessTestCluster Cluster { get; private set; } = null!;

    public IGrainFactory Grains => Cluster.Client;

    public IVirtualMachineGrain Vm(string host, string vm) => Grains.GetGrain<IVirtualMachineGrain>(GrainKeys.Vm(host, vm));

    public async Task InitializeAsync()
    {
        var builder = new InProcessTestClusterBuilder(2);
        builder.ConfigureSilo((options, silo) =>
        {
            var host = _siloHosts.Assign(options.SiloName);
            silo.AddMemoryGrainStorage(StorageNames.Default);
            silo.UseInMemoryReminderService();
            if (host == FakeHost)
            {
                silo.Services.AddSingleton(new CheckpointSchedulePlanner(Clock, TimeSpan.FromMilliseconds(50)));
            }

            silo.AddOrchestratorGrains(host);
            silo.Services.AddSingleton<IHypervisor>(host == FakeHost ? Fake : Real);
        });
        Cluster = builder.Build();
        await Cluster.DeployAsync();
        await SyncAsync(RealHost);
        await SyncAsync(FakeHost);
    }

    public async Task DisposeAsync()
    {
        await Cluster.StopAllSilosAsync();
        await Cluster.DisposeAsync();
    }

    public InProcessSiloHandle SiloOf(string host) =>
        Cluster.Silos.Single(s => _siloHosts.Serves(s.Name, host));

    /// <summary>Writes a VM's persisted state straight into grain storage, as a crashed or busy earlier activation left it.</summary>
    public async Task WriteVmStateAsync(string host, string vm, VirtualMachineState state)
    {
        var storage = SiloOf(host).ServiceProvider.GetRequiredKeyedService<IGrainStorage>(StorageNames.Default);
        await storage.WriteStateAsync("vm", Vm(host, vm).GetGrainId(), new GrainState<VirtualMachineState>(state));
    }

    /// <summary>A VM state as inventory would have recorded it for a domain of the simulated host.</summary>
    public static async Task<VirtualMachineState> KnownStateAsync(SimulatedHypervisor hv, string domain)
    {
        var info = await hv.GetDomainAsync(domain);
        return new VirtualMachineState
        {
            Known = true,
            Present = true,
            Uuid = info.Uuid,
            PowerState = (VmPowerState)info.State,
            Disks = [.. info.Disks.Select(d => new VmDiskRecord { Target = d.Target, SourcePath = d.SourcePath, Format = d.Format, ChainDepth = d.ChainDepth })],
            MemoryKiB = info.MemoryKiB,
            VirtualCpus = info.VirtualCpus,
            FirstSeen = DateTimeOffset.UtcNow,
            LastChanged = DateTimeOffset.UtcNow,
        };
    }

    /// <summary>Polls until <paramref name="condition"/> holds (the grain timer works on real time); fails after 15 s.</summary>
    public static async Task<T> EventuallyAsync<T>(Func<Task<T>> read, Func<T, bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        while (true)
        {
            var value = await read();
            if (condition(value))
            {
                return value;
            }

            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"timed out waiting for {what}; last value: {value}");
            }

            await Task.Delay(20);
        }
    }

    /// <summary>Silo metadata reaches other silos asynchronously: retry until the host can be placed.</summary>
    private async Task SyncAsync(string host)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            try
            {
                await Grains.GetGrain<IHostGrain>(host).SyncInventoryAsync();
                return;
            }
            catch (OrchestratorException e) when (e.Code == ErrorCode.HostUnavailable && DateTime.UtcNow < deadline)
            {
                await Task.Delay(100);
            }
        }
    }
}

[CollectionDefinition(Name)]
public sealed class CheckpointClusterCollection : ICollectionFixture<CheckpointClusterFixture>
{
    public const string Name = "checkpoint cluster";
}
