namespace Orchestrator;

/// <summary>Power state of a VM (same values as libvirt's virDomainState).</summary>
public enum VmPowerState
{
    Unknown = 0,
    Running = 1,
    Blocked = 2,
    Paused = 3,
    ShuttingDown = 4,
    ShutOff = 5,
    Crashed = 6,
    PmSuspended = 7,
}

[GenerateSerializer]
[Alias("orchestrator.ChainLayerView")]
public sealed record ChainLayerView(
    [property: Id(0)] string Path,
    [property: Id(1)] string Format);

[GenerateSerializer]
[Alias("orchestrator.DiskView")]
public sealed record DiskView(
    [property: Id(0)] string Target,
    [property: Id(1)] string SourcePath,
    [property: Id(2)] string Format,
    [property: Id(3)] int ChainDepth);

[GenerateSerializer]
[Alias("orchestrator.VmView")]
public sealed record VmView(
    [property: Id(0)] string Host,
    [property: Id(1)] string Name,
    [property: Id(2)] Guid Uuid,
    [property: Id(3)] VmPowerState PowerState,
    [property: Id(4)] IReadOnlyList<DiskView> Disks,
    [property: Id(5)] IReadOnlyDictionary<string, string> Labels,
    [property: Id(6)] long MemoryKiB,
    [property: Id(7)] int VirtualCpus,
    [property: Id(8)] DateTimeOffset LastSync,
    [property: Id(9)] bool Present,
    [property: Id(10)] DateTimeOffset FirstSeen,
    [property: Id(11)] DateTimeOffset? LastBackupAt = null,
    [property: Id(12)] DateTimeOffset? LastCheckpointAt = null,
    [property: Id(13)] TestRestoreView? LastProvenRestore = null,
    [property: Id(14)] TestRestoreView? LastTestRestore = null)
{
    public string Key => GrainKeys.Vm(Host, Name);
}

/// <summary>A disk's backing chain: active image first, base last.</summary>
[GenerateSerializer]
[Alias("orchestrator.DiskChainView")]
public sealed record DiskChainView(
    [property: Id(0)] string Host,
    [property: Id(1)] string Vm,
    [property: Id(2)] string Target,
    [property: Id(3)] IReadOnlyList<ChainLayerView> Layers,
    [property: Id(4)] DateTimeOffset LastReconciled)
{
    public string Key => GrainKeys.Disk(Host, Vm, Target);
}

[GenerateSerializer]
[Alias("orchestrator.HostView")]
public sealed record HostView(
    [property: Id(0)] string Name,
    [property: Id(1)] string Uri,
    [property: Id(2)] string Driver,
    [property: Id(3)] string LibvirtVersion,
    [property: Id(4)] string HypervisorVersion,
    [property: Id(5)] int VmCount,
    [property: Id(6)] DateTimeOffset? LastSync,
    [property: Id(7)] string? LastSyncError,
    [property: Id(8)] string Silo);

/// <summary>What a host's inventory sync found for one VM; applied to its grain by the host grain.</summary>
[GenerateSerializer]
[Alias("orchestrator.VmInventory")]
public sealed record VmInventory(
    [property: Id(0)] Guid Uuid,
    [property: Id(1)] VmPowerState PowerState,
    [property: Id(2)] IReadOnlyList<DiskInventory> Disks,
    [property: Id(3)] IReadOnlyDictionary<string, string> Labels,
    [property: Id(4)] long MemoryKiB,
    [property: Id(5)] int VirtualCpus,
    [property: Id(6)] DateTimeOffset SyncedAt);

[GenerateSerializer]
[Alias("orchestrator.DiskInventory")]
public sealed record DiskInventory(
    [property: Id(0)] string Target,
    [property: Id(1)] IReadOnlyList<ChainLayerView> Layers);

/// <summary>A host as the fleet registry knows it.</summary>
[GenerateSerializer]
[Alias("orchestrator.HostRegistration")]
public sealed record HostRegistration(
    [property: Id(0)] string Name,
    [property: Id(1)] string Uri,
    [property: Id(2)] DateTimeOffset FirstSeen,
    [property: Id(3)] DateTimeOffset LastSeen);
