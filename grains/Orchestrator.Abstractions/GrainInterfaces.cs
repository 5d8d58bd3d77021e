namespace Orchestrator;

/// <summary>One hypervisor host (key: host name). Lives on the silo that serves the host.</summary>
[Alias("orchestrator.IHostGrain")]
public interface IHostGrain : IGrainWithStringKey
{
    /// <summary>Reads the host's domains from its hypervisor and brings VM and disk-chain grains up to date.</summary>
    [Alias("SyncInventory")]
    Task<HostView> SyncInventoryAsync(CancellationToken cancellationToken = default);

    [Alias("Get")]
    Task<HostView> GetAsync(CancellationToken cancellationToken = default);

    /// <summary>VM names known on this host (present or vanished at the last sync).</summary>
    [Alias("ListVms")]
    Task<IReadOnlyList<VmView>> ListVmsAsync(CancellationToken cancellationToken = default);
}

/// <summary>One VM (key: host/vm). Lives on its host's silo.</summary>
[Alias("orchestrator.IVirtualMachineGrain")]
public interface IVirtualMachineGrain : IGrainWithStringKey, ICheckpointOperations, IBackupOperations
{
    /// <summary>The VM record; NotFound when inventory never saw this VM.</summary>
    [Alias("Get")]
    Task<VmView> GetAsync(CancellationToken cancellationToken = default);

    [Alias("ApplyInventory")]
    Task ApplyInventoryAsync(VmInventory inventory, CancellationToken cancellationToken = default);

    /// <summary>The VM was not found on its host at a sync.</summary>
    [Alias("MarkAbsent")]
    Task MarkAbsentAsync(DateTimeOffset syncedAt, CancellationToken cancellationToken = default);
}

/// <summary>One disk's backing chain (key: host/vm/disk). Lives on its host's silo.</summary>
[Alias("orchestrator.IDiskChainGrain")]
public interface IDiskChainGrain : IGrainWithStringKey
{
    [Alias("Get")]
    Task<DiskChainView> GetAsync(CancellationToken cancellationToken = default);

    [Alias("Reconcile")]
    Task ReconcileAsync(DiskInventory inventory, DateTimeOffset at, CancellationToken cancellationToken = default);
}

/// <summary>The fleet singleton (key: "fleet"): registry of hosts.</summary>
[Alias("orchestrator.IFleetGrain")]
public interface IFleetGrain : IGrainWithStringKey
{
    [Alias("RegisterHost")]
    Task RegisterHostAsync(string host, string uri, CancellationToken cancellationToken = default);

    [Alias("ListHosts")]
    Task<IReadOnlyList<HostRegistration>> ListHostsAsync(CancellationToken cancellationToken = default);
}
