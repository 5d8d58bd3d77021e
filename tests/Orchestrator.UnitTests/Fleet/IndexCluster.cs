using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Orchestrator.Grains;
using Orchestrator.Grains.Fleet;
using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Simulated;
using Orleans.Storage;
using Orleans.TestingHost;

namespace Orchestrator.UnitTests.Fleet;

/// <summary>
/// An in-process cluster for the fleet index tests: one silo per host (each with its own simulated hypervisor, no
/// VMs unless a test adds them), all on one <see cref="CountingGrainStorage"/> that a test may fill before the start.
/// </summary>
public sealed class IndexCluster : IAsyncDisposable
{
    private readonly Cluster.SiloHosts _siloHosts;

    private IndexCluster(CountingGrainStorage storage, IReadOnlyList<string> hosts) => (Storage, _siloHosts) = (storage, new Cluster.SiloHosts(hosts));

    public InProcessTestCluster Cluster { get; private set; } = null!;

    public CountingGrainStorage Storage { get; }

    public ConcurrentDictionary<string, SimulatedHypervisor> Hypervisors { get; } = new();

    public IGrainFactory Grains => Cluster.Client;

    public IFleetGrain Fleet => Grains.GetGrain<IFleetGrain>(GrainKeys.Fleet);

    public static async Task<IndexCluster> StartAsync(IReadOnlyList<string> hosts, Action<FleetIndexOptions> configure, Action<ISiloBuilder>? silos = null)
    {
        var cluster = new IndexCluster(new CountingGrainStorage(), hosts);
        var builder = new InProcessTestClusterBuilder((short)hosts.Count);
        builder.ConfigureSilo((options, silo) =>
        {
            var host = cluster._siloHosts.Assign(options.SiloName);
            var hypervisor = cluster.Hypervisors.GetOrAdd(host, h => new SimulatedHypervisor(new SimulatedOptions { HostName = h }));
            silo.Services.AddKeyedSingleton<IGrainStorage>(StorageNames.Default, cluster.Storage);
            silo.AddOrchestratorGrains(host);
            silo.Services.AddSingleton<IHypervisor>(hypervisor);
            silo.Services.Configure(configure);
            silo.UseInMemoryReminderService();
            silos?.Invoke(silo);
        });
        cluster.Cluster = builder.Build();
        await cluster.Cluster.DeployAsync();
        return cluster;
    }

    public InProcessSiloHandle SiloOf(string host) =>
        Cluster.Silos.Single(s => _siloHosts.Serves(s.Name, host));

    /// <summary>Syncs a host, retrying while placement does not see its silo yet (silo metadata spreads asynchronously).</summary>
    public async Task SyncAsync(string host)
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

    public async ValueTask DisposeAsync()
    {
        await Cluster.StopAllSilosAsync();
        await Cluster.DisposeAsync();
    }

    public static VmIndexEntry Vm(string host, string name, IReadOnlyDictionary<string, string>? labels = null, bool present = true, DateTimeOffset? backup = null, DateTimeOffset? checkpoint = null) =>
        new(host, name, Guid.NewGuid(), present, labels ?? new Dictionary<string, string>(StringComparer.Ordinal), backup, checkpoint);

    public static PolicyRegistration Policy(string name, PolicyKind kind, PolicySelector selector, TimeSpan rpo, int version = 1) =>
        new(new PolicySpec { Name = name, Kind = kind, Selector = selector, Rpo = rpo }, version);

    public static PolicySelector ByLabel(string key, string value) =>
        new() { Labels = new Dictionary<string, string>(StringComparer.Ordinal) { [key] = value } };
}
