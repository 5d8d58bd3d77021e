using Orchestrator.IntegrationTests.Infrastructure;

namespace Orchestrator.IntegrationTests.Silo;

public sealed class SqlitePersistenceTests
{
    [Fact]
    public async Task EmbeddedSilo_KilledAndRestarted_StateReadBackUnchanged()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"orchestrator-sqlite-{Guid.NewGuid():N}");
        try
        {
            Api.V1.Vm before;
            await using (var silo = new SiloProcess("demo-01", dir))
            {
                silo.Start();
                await silo.WaitReadyAsync();
                before = await GrpcClients.Fleet(silo.GrpcEndpoint).WaitForVmAsync("demo-01/db-1");
                await silo.KillAsync();
            }

            Assert.True(File.Exists(Path.Combine(dir, "orchestrator.db")));
            await using var restarted = new SiloProcess("demo-01", dir);
            restarted.Start();
            await restarted.WaitReadyAsync();
            var after = await GrpcClients.Fleet(restarted.GrpcEndpoint).WaitForVmAsync("demo-01/db-1");

            // first_seen is written once, when inventory first sees the VM: equal means the state was read back.
            Assert.Equal(before.FirstSeen, after.FirstSeen);
            Assert.Equal(before.Uuid, after.Uuid);
            Assert.Equal(before.Disks, after.Disks);
            Assert.Equal(before.Labels, after.Labels);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}

[Collection(PostgresCollection.Name)]
public sealed class PostgresClusterTests(PostgresFixture postgres)
{
    [Fact]
    public async Task TwoSiloProcesses_FormOneCluster_AndStateSurvivesKill()
    {
        var root = Path.Combine(Path.GetTempPath(), $"orchestrator-pgcluster-{Guid.NewGuid():N}");
        var clusterId = $"test-{Guid.NewGuid():N}"[..16];
        Dictionary<string, string> Cluster() => new()
        {
            ["Orchestrator__Persistence__Mode"] = "Cluster",
            ["Orchestrator__Persistence__PostgresConnectionString"] = postgres.ConnectionString,
            ["Orchestrator__Cluster__ClusterId"] = clusterId,
        };

        try
        {
            await using var kvm1 = new SiloProcess("kvm-01", Path.Combine(root, "kvm-01"), Cluster());
            await using var kvm2 = new SiloProcess("kvm-02", Path.Combine(root, "kvm-02"), Cluster());
            kvm1.Start();
            await kvm1.WaitReadyAsync();
            kvm2.Start();
            await kvm2.WaitReadyAsync();

            // Through kvm-02's gRPC endpoint: both hosts online, and kvm-01's VM (served by the other process).
            var fleet2 = GrpcClients.Fleet(kvm2.GrpcEndpoint);
            var before = await fleet2.WaitForVmAsync("kvm-01/web-1");
            await fleet2.WaitForVmAsync("kvm-02/web-1");
            var hosts = (await fleet2.ListHostsAsync(new Api.V1.ListHostsRequest())).Hosts;
            Assert.Equal(["kvm-01", "kvm-02"], hosts.Select(h => h.Name));
            Assert.All(hosts, h => Assert.True(h.Online, $"{h.Name} should be online"));
            Assert.NotEqual(hosts[0].Silo, hosts[1].Silo);

            await kvm1.KillAsync();
            kvm1.Start();
            await kvm1.WaitReadyAsync(TimeSpan.FromMinutes(3));
            var after = await GrpcClients.Fleet(kvm1.GrpcEndpoint).WaitForVmAsync("kvm-01/web-1", TimeSpan.FromMinutes(2));

            Assert.Equal(before.FirstSeen, after.FirstSeen);
            Assert.Equal(before.Uuid, after.Uuid);
            Assert.Equal(before.Disks, after.Disks);
        }
        finally
        {
            if (Directory.Exists(root))
            {
                Directory.Delete(root, recursive: true);
            }
        }
    }
}
