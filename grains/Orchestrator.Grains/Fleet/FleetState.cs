using MessagePack;

namespace Orchestrator.Grains.Fleet;

[GenerateSerializer]
[Alias("orchestrator.FleetState")]
[MessagePackObject]
public sealed record class FleetState
{
    [Id(0)]
    [Key(0)]
    public Dictionary<string, HostRecord> Hosts { get; set; } = new(StringComparer.Ordinal);

    /// <summary>
    /// The old single VM index by key (host/vm). Now only read: on activation the fleet grain hands each host's
    /// records to that host's index shard (<see cref="HostIndexGrain"/>) and stores this empty. Key 1 stays
    /// reserved for it (state written before the shards existed must still be read).
    /// </summary>
    [Id(1)]
    [Key(1)]
    public Dictionary<string, VmIndexRecord> Vms { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Registered policies by name (the policy grains own them; this copy serves selection and compliance).</summary>
    [Id(2)]
    [Key(2)]
    public Dictionary<string, PolicyRegistrationRecord> Policies { get; set; } = new(StringComparer.Ordinal);

    /// <summary>
    /// Retired: admission slots of the code before per-host policy run parts (grants now live in each run's header
    /// and parts). Still read, so state written before stays readable; nothing adds to it any more.
    /// </summary>
    [Id(3)]
    [Key(3)]
    public Dictionary<string, AdmissionLease> Leases { get; set; } = new(StringComparer.Ordinal);

    /// <summary>
    /// Hosts whose index shard holds VMs although no host grain registered them in <see cref="Hosts"/> (migrated from
    /// the old single index, or reported through the fleet grain). Fleet-wide queries ask the shards of both.
    /// </summary>
    [Id(4)]
    [Key(4)]
    public HashSet<string> IndexHosts { get; set; } = new(StringComparer.Ordinal);
}

[GenerateSerializer]
[Alias("orchestrator.VmIndexRecord")]
[MessagePackObject]
public sealed record class VmIndexRecord
{
    [Id(0)]
    [Key(0)]
    public string Host { get; set; } = "";

    [Id(1)]
    [Key(1)]
    public string Name { get; set; } = "";

    [Id(2)]
    [Key(2)]
    public Guid Uuid { get; set; }

    [Id(3)]
    [Key(3)]
    public bool Present { get; set; }

    [Id(4)]
    [Key(4)]
    public Dictionary<string, string> Labels { get; set; } = new(StringComparer.Ordinal);

    [Id(5)]
    [Key(5)]
    public DateTimeOffset? LastBackupAt { get; set; }

    [Id(6)]
    [Key(6)]
    public DateTimeOffset? LastCheckpointAt { get; set; }

    /// <summary>When the VM's newest passed test restore ended (its last proven restore); null when none passed.</summary>
    [Id(7)]
    [Key(7)]
    public DateTimeOffset? ProvenRestoreAt { get; set; }

    /// <summary>That test's boot time (start of the throwaway VM to the probe's answer), in seconds.</summary>
    [Id(8)]
    [Key(8)]
    public double? ProvenBootSeconds { get; set; }
}

[GenerateSerializer]
[Alias("orchestrator.PolicyRegistrationRecord")]
[MessagePackObject]
public sealed record class PolicyRegistrationRecord
{
    [Id(0)]
    [Key(0)]
    public Policies.PolicySpecRecord Spec { get; set; } = new();

    [Id(1)]
    [Key(1)]
    public int Version { get; set; }
}

[GenerateSerializer]
[Alias("orchestrator.AdmissionLease")]
[MessagePackObject]
public sealed record class AdmissionLease
{
    [Id(0)]
    [Key(0)]
    public string Policy { get; set; } = "";

    [Id(1)]
    [Key(1)]
    public string RunId { get; set; } = "";

    [Id(2)]
    [Key(2)]
    public string Host { get; set; } = "";

    [Id(3)]
    [Key(3)]
    public DateTimeOffset At { get; set; }
}

[GenerateSerializer]
[Alias("orchestrator.HostRecord")]
[MessagePackObject]
public sealed record class HostRecord
{
    [Id(0)]
    [Key(0)]
    public string Uri { get; set; } = "";

    [Id(1)]
    [Key(1)]
    public DateTimeOffset FirstSeen { get; set; }

    [Id(2)]
    [Key(2)]
    public DateTimeOffset LastSeen { get; set; }
}
