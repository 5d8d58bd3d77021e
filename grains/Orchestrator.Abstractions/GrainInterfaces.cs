using Orleans.Concurrency;

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
public interface IVirtualMachineGrain : IGrainWithStringKey, ICheckpointOperations, IBackupOperations, ITestRestoreOperations
{
    /// <summary>The VM record; NotFound when inventory never saw this VM.</summary>
    [Alias("Get")]
    Task<VmView> GetAsync(CancellationToken cancellationToken = default);

    [Alias("ApplyInventory")]
    /// <summary>Applies what a sync found and returns the VM record afterwards.</summary>
    Task<VmView> ApplyInventoryAsync(VmInventory inventory, CancellationToken cancellationToken = default);

    /// <summary>The VM was not found on its host at a sync; returns its record (null when it was never known).</summary>
    [Alias("MarkAbsent")]
    Task<VmView?> MarkAbsentAsync(DateTimeOffset syncedAt, CancellationToken cancellationToken = default);
}

/// <summary>One disk's backing chain (key: host/vm/disk). Lives on its host's silo.</summary>
[Alias("orchestrator.IDiskChainGrain")]
public interface IDiskChainGrain : IGrainWithStringKey
{
    [Alias("Get")]
    Task<DiskChainView> GetAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// Records the chain the inventory found. The top <paramref name="transientLayers"/> layers are the VM's active
    /// backup overlays: shown while seen, not stored (the run's own state records them).
    /// </summary>
    [Alias("Reconcile")]
    Task ReconcileAsync(DiskInventory inventory, DateTimeOffset at, int transientLayers, CancellationToken cancellationToken = default);
}

/// <summary>
/// The fleet singleton (key: "fleet"): registry of hosts and policies, and fleet-wide views of the VM index and
/// compliance assembled from the hosts' index shards (<see cref="IHostIndexGrain"/>). Admission budgets live in the
/// policy runs' per-host parts.
/// </summary>
[Alias("orchestrator.IFleetGrain")]
public interface IFleetGrain : IGrainWithStringKey
{
    [Alias("RegisterHost")]
    Task RegisterHostAsync(string host, string uri, CancellationToken cancellationToken = default);

    [Alias("ListHosts")]
    Task<IReadOnlyList<HostRegistration>> ListHostsAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// A host's inventory sync: replaces the index entries of that host (VMs not listed are marked absent). Forwarded
    /// to the host's index shard, which host grains call directly; the host joins the shards fleet-wide views ask.
    /// </summary>
    [Alias("ReportInventory")]
    Task ReportInventoryAsync(string host, IReadOnlyList<VmIndexEntry> vms, CancellationToken cancellationToken = default);

    /// <summary>A VM finished a good backup (LiveBackup) or checkpoint (Checkpoint) at <paramref name="at"/>. Forwarded to the host's index shard.</summary>
    [Alias("RecordProtection")]
    Task RecordProtectionAsync(string host, string vm, PolicyKind kind, DateTimeOffset at, CancellationToken cancellationToken = default);

    /// <summary>The fleet's VM index, ordered by host then name (read-only: interleaves with the registries' calls).</summary>
    [AlwaysInterleave]
    [Alias("ListVms")]
    Task<IReadOnlyList<VmIndexEntry>> ListVmsAsync(CancellationToken cancellationToken = default);

    /// <summary>Present VMs of the index that the selector matches (also VMs of hosts whose silo is down now).</summary>
    [AlwaysInterleave]
    [Alias("Select")]
    Task<IReadOnlyList<VmIndexEntry>> SelectAsync(PolicySelector selector, CancellationToken cancellationToken = default);

    /// <summary>The hosts whose index shards fleet-wide views ask (per host: <see cref="IHostIndexGrain"/> with the host as key).</summary>
    [Alias("ListIndexHosts")]
    Task<IReadOnlyList<string>> ListIndexHostsAsync(CancellationToken cancellationToken = default);

    [Alias("RegisterPolicy")]
    Task RegisterPolicyAsync(PolicyRegistration policy, CancellationToken cancellationToken = default);

    [Alias("UnregisterPolicy")]
    Task UnregisterPolicyAsync(string name, CancellationToken cancellationToken = default);

    [Alias("ListPolicies")]
    Task<IReadOnlyList<PolicyRegistration>> ListPoliciesAsync(CancellationToken cancellationToken = default);

    /// <summary>Every VM in the index with the policies that select it, its newest good backup/checkpoint and RPO status.</summary>
    [AlwaysInterleave]
    [Alias("GetCompliance")]
    Task<IReadOnlyList<VmCompliance>> GetComplianceAsync(CancellationToken cancellationToken = default);
}
