using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Orchestrator.Grains;
using Orchestrator.Grains.Backups;
using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Simulated;
using Orleans.TestingHost;

namespace Orchestrator.UnitTests.Cluster;

/// <summary>
/// Three silos in one in-process test cluster, each standing for one hypervisor host with its own simulated
/// hypervisor: kvm-01 serves the first silo, kvm-02 the second, kvm-03 the third.
/// </summary>
public class ThreeHostClusterFixture : IAsyncLifetime
{
    public static readonly string[] Hosts = ["kvm-01", "kvm-02", "kvm-03"];

    /// <summary>Hosts whose silos a test starts later (StartAdditionalSiloAsync), in that order.</summary>
    protected virtual IReadOnlyList<string> LateHosts => [];

    private SiloHosts _siloHosts = null!;

    public InProcessTestCluster Cluster { get; private set; } = null!;

    /// <summary>The only directory backups may go to in this cluster.</summary>
    public string BackupRoot { get; } = Path.Combine(Path.GetTempPath(), $"orchestrator-unit-{Guid.NewGuid():N}");

    /// <summary>A host's restore root (Orchestrator:Backup:RestoreRoots): where sets from other hosts restore to.</summary>
    public string RestoreRoot(string host) => Path.Combine(BackupRoot, "restored", host);

    public ConcurrentDictionary<string, SimulatedHypervisor> Hypervisors { get; } = new();

    public IGrainFactory Grains => Cluster.Client;

    public async Task InitializeAsync()
    {
        _siloHosts = new SiloHosts(Hosts.Concat(LateHosts));
        var builder = new InProcessTestClusterBuilder(3);
        builder.ConfigureSilo((options, silo) =>
        {
            var host = _siloHosts.Assign(options.SiloName);
            var hypervisor = Hypervisors.GetOrAdd(host, h => Seed(new SimulatedHypervisor(new SimulatedOptions { HostName = h }), h));
            silo.AddMemoryGrainStorage(StorageNames.Default);
            silo.AddOrchestratorGrains(host);
            silo.Services.Configure<BackupOptions>(o =>
            {
                o.Roots = [BackupRoot];
                o.DefaultTarget = Path.Combine(BackupRoot, host);
                o.RestoreRoots = [RestoreRoot(host)];
            });
            silo.Services.AddSingleton<IHypervisor>(hypervisor);
            silo.UseInMemoryReminderService();
            ConfigureSilo(silo);
        });
        foreach (var host in Hosts.Concat(LateHosts))
        {
            Directory.CreateDirectory(RestoreRoot(host));
        }

        Cluster = builder.Build();
        await Cluster.DeployAsync();
        await WaitForPlacementAsync();
    }

    public async Task DisposeAsync()
    {
        await Cluster.StopAllSilosAsync();
        await Cluster.DisposeAsync();
        if (Directory.Exists(BackupRoot))
        {
            Directory.Delete(BackupRoot, recursive: true);
        }
    }

    /// <summary>More silo configuration for a derived fixture.</summary>
    protected virtual void ConfigureSilo(ISiloBuilder silo)
    {
    }

    /// <summary>The silo serving a host, as the test cluster named it.</summary>
    public InProcessSiloHandle SiloOf(string host) =>
        Cluster.Silos.Single(s => _siloHosts.Serves(s.Name, host));

    protected static SimulatedHypervisor Seed(SimulatedHypervisor hypervisor, string host)
    {
        const long GiB = 1L << 30;
        var n = host[^1];
        hypervisor.AddDomain($"web-{n}", DomainPowerState.Running, [("vda", "qcow2", 20 * GiB), ("vdb", "raw", 4 * GiB)], new Dictionary<string, string> { ["tier"] = "web" });
        hypervisor.AddDomain($"db-{n}", DomainPowerState.ShutOff, [("vda", "qcow2", 40 * GiB)], new Dictionary<string, string> { ["tier"] = "db" });
        return hypervisor;
    }

    /// <summary>Silo metadata reaches other silos asynchronously: wait until every host can be placed.</summary>
    private async Task WaitForPlacementAsync()
    {
        // Generous: on a loaded 2-core machine (the lab tests of another suite beside it) this took over 30 s.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(120);
        foreach (var host in Hosts)
        {
            while (true)
            {
                try
                {
                    await Grains.GetGrain<IHostGrain>(host).SyncInventoryAsync();
                    break;
                }
                catch (OrchestratorException e) when (e.Code == ErrorCode.HostUnavailable && DateTime.UtcNow < deadline)
                {
                    await Task.Delay(100);
                }
            }
        }
    }
}

[CollectionDefinition(Name)]
public sealed class ThreeHostClusterCollection : ICollectionFixture<ThreeHostClusterFixture>
{
    public const string Name = "three-host cluster";
}
