using MessagePack;
using MessagePack.Resolvers;
using Orchestrator.Grains.Fleet;
using Orchestrator.Grains.Policies;

namespace Orchestrator.UnitTests.Fleet;

/// <summary>State written before the index was sharded: the fleet grain's one blob with every VM (FleetState key 1).</summary>
public sealed class FleetIndexMigrationTests
{
    /// <summary>FleetState as the code before the host shards wrote it: keys 0-3, no key 4.</summary>
    [MessagePackObject]
    public sealed class OldFleetState
    {
        [Key(0)]
        public Dictionary<string, HostRecord> Hosts { get; set; } = new();

        [Key(1)]
        public Dictionary<string, VmIndexRecord> Vms { get; set; } = new();

        [Key(2)]
        public Dictionary<string, PolicyRegistrationRecord> Policies { get; set; } = new();

        [Key(3)]
        public Dictionary<string, AdmissionLease> Leases { get; set; } = new();
    }

    private static readonly MessagePackSerializerOptions Options = MessagePackSerializerOptions.Standard.WithResolver(StandardResolver.Instance);

    private static VmIndexRecord Record(string host, string name, string tier, bool present = true, DateTimeOffset? backup = null) => new()
    {
        Host = host,
        Name = name,
        Uuid = Guid.NewGuid(),
        Present = present,
        Labels = new Dictionary<string, string>(StringComparer.Ordinal) { ["tier"] = tier },
        LastBackupAt = backup,
    };

    [Fact]
    public async Task Activation_OldFleetStateWithVmsOn2Hosts_HandsThemToTheShards_AndStoresTheFleetWithoutVms()
    {
        var now = DateTimeOffset.UtcNow;
        await using var index = await IndexCluster.StartAsync(["mig-s"], _ => { });
        var fleetId = index.Fleet.GetGrainId();
        var old = new OldFleetState();
        old.Hosts["mig-a"] = new HostRecord { Uri = "qemu+ssh://mig-a/system", FirstSeen = now.AddDays(-3), LastSeen = now.AddDays(-1) };
        foreach (var r in new[]
        {
            Record("mig-a", "a1", "web", backup: now - TimeSpan.FromHours(5)),
            Record("mig-a", "a2", "db", present: false),
            Record("mig-b", "b1", "web"),
            Record("mig-b", "b2", "web", backup: now - TimeSpan.FromMinutes(5)),
        })
        {
            old.Vms[$"{r.Host}/{r.Name}"] = r;
        }

        var web = new PolicySpec { Name = "mig-web", Kind = PolicyKind.LiveBackup, Selector = IndexCluster.ByLabel("tier", "web"), Rpo = TimeSpan.FromHours(1) };
        old.Policies["mig-web"] = new PolicyRegistrationRecord { Spec = PolicySpecRecord.From(web), Version = 3 };
        old.Leases["mig-a/a1"] = new AdmissionLease { Policy = "mig-web", RunId = "r1", Host = "mig-a", At = now };
        index.Storage.Put("fleet", fleetId, MessagePackSerializer.Serialize(old, Options));

        // mig-a's shard already holds a newer backup of a1 (its VM reported it) and stale labels: the newer time stays,
        // the labels come from the handed-over record.
        var shardA = index.Grains.GetGrain<IHostIndexGrain>("mig-a");
        var newer = now - TimeSpan.FromMinutes(20);
        index.Storage.Put("hostindex", shardA.GetGrainId(), new Grains.Storage.MessagePackGrainStorageSerializer().Serialize(new HostIndexState
        {
            Vms = { ["a1"] = new VmIndexRecord { Host = "mig-a", Name = "a1", Present = true, Labels = new() { ["tier"] = "old" }, LastBackupAt = newer } },
        }).ToArray());

        var selected = await index.Fleet.SelectAsync(IndexCluster.ByLabel("tier", "web"));
        Assert.Equal(["mig-a/a1", "mig-b/b1", "mig-b/b2"], selected.Select(v => v.Key));
        Assert.Equal(newer, selected[0].LastBackupAt);

        var compliance = await index.Fleet.GetComplianceAsync();
        Assert.Equal(["mig-a/a1", "mig-a/a2", "mig-b/b1", "mig-b/b2"], compliance.Select(c => c.Key));
        Assert.Equal(
            [ComplianceStatus.Ok, ComplianceStatus.Unprotected, ComplianceStatus.Never, ComplianceStatus.Ok],
            compliance.Select(c => c.Status));
        Assert.False(compliance[1].Present);
        Assert.Equal(3, Assert.Single(compliance[0].Policies).Version);

        // The fleet's row: no VMs any more, both shards registered, hosts, policies and slots untouched.
        var stored = index.Storage.Read<FleetState>("fleet", fleetId)!;
        Assert.Empty(stored.Vms);
        Assert.Equal(["mig-a", "mig-b"], stored.IndexHosts.Order(StringComparer.Ordinal));
        Assert.Equal("qemu+ssh://mig-a/system", stored.Hosts["mig-a"].Uri);
        Assert.Equal("r1", stored.Leases["mig-a/a1"].RunId);
        Assert.Equal(["mig-a"], (await index.Fleet.ListHostsAsync()).Select(h => h.Name));

        // Each shard stored its records.
        var storedB = index.Storage.Read<HostIndexState>("hostindex", index.Grains.GetGrain<IHostIndexGrain>("mig-b").GetGrainId())!;
        Assert.Equal(["b1", "b2"], storedB.Vms.Keys.Order(StringComparer.Ordinal));
        Assert.Equal("web", index.Storage.Read<HostIndexState>("hostindex", shardA.GetGrainId())!.Vms["a1"].Labels["tier"]);
    }

    [Fact]
    public void FleetState_OldBytes_ReadWithTheirVms_AndNewBytesKeepKey1Free()
    {
        var old = new OldFleetState();
        old.Vms["h/v"] = Record("h", "v", "web");
        var serializer = new Grains.Storage.MessagePackGrainStorageSerializer();
        var read = serializer.Deserialize<FleetState>(new BinaryData(MessagePackSerializer.Serialize(old, Options)));
        Assert.Equal("v", read.Vms["h/v"].Name);
        Assert.Empty(read.IndexHosts);

        var back = MessagePackSerializer.Deserialize<OldFleetState>(serializer.Serialize(new FleetState { IndexHosts = { "h" } }).ToMemory(), Options);
        Assert.Empty(back.Vms);
    }
}
