using Orchestrator.Grains.Fleet;

namespace Orchestrator.UnitTests.Fleet;

/// <summary>
/// Three silos (ix-01..ix-03) whose host shards hold 10,002 indexed VMs (3,334 each, reported through the fleet
/// grain so it knows the shards), and two policies. Protection times flush after 300 ms of quiet, at most every 2 s.
/// Tests that need a shard of their own use hosts no silo serves and call that shard directly (the fleet does not
/// know it, so fleet-wide answers stay the seeded ones).
/// </summary>
public sealed class FleetIndexFixture : IAsyncLifetime
{
    public static readonly string[] Hosts = ["ix-01", "ix-02", "ix-03"];

    public const int VmsPerHost = 3334;

    public static readonly TimeSpan QuietDelay = TimeSpan.FromMilliseconds(300);

    public static readonly TimeSpan MaxDelay = TimeSpan.FromSeconds(2);

    public IndexCluster Index { get; private set; } = null!;

    public static string VmName(int i) => $"vm-{i:D5}";

    public async Task InitializeAsync()
    {
        Index = await IndexCluster.StartAsync(Hosts, o =>
        {
            o.ProtectionFlushQuietDelay = QuietDelay;
            o.ProtectionFlushMaxDelay = MaxDelay;
        });
        foreach (var host in Hosts)
        {
            var vms = Enumerable.Range(0, VmsPerHost)
                .Select(i => IndexCluster.Vm(host, VmName(i), new Dictionary<string, string>(StringComparer.Ordinal) { ["tier"] = i % 2 == 0 ? "web" : "db", ["group"] = "scale" }))
                .ToList();
            await Index.Fleet.ReportInventoryAsync(host, vms);
        }

        await Index.Fleet.RegisterPolicyAsync(IndexCluster.Policy("scale-web", PolicyKind.LiveBackup, IndexCluster.ByLabel("tier", "web"), TimeSpan.FromHours(1)));
        await Index.Fleet.RegisterPolicyAsync(IndexCluster.Policy("scale-all", PolicyKind.Checkpoint, IndexCluster.ByLabel("group", "scale"), TimeSpan.Zero));
    }

    public async Task DisposeAsync() => await Index.DisposeAsync();
}

[CollectionDefinition(Name)]
public sealed class FleetIndexCollection : ICollectionFixture<FleetIndexFixture>
{
    public const string Name = "fleet index";
}
