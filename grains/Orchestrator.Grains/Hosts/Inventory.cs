using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.Hosts;

/// <summary>Maps what the hypervisor reports to the inventory contracts.</summary>
internal static class Inventory
{
    public static VmInventory From(DomainInfo domain, DateTimeOffset at) => new(
        domain.Uuid,
        (VmPowerState)(int)domain.State,
        [.. domain.Disks.Select(From)],
        domain.Labels,
        domain.MemoryKiB,
        domain.VirtualCpus,
        at);

    public static DiskInventory From(DomainDisk disk) => new(
        disk.Target,
        [new ChainLayerView(disk.SourcePath, disk.Format), .. disk.BackingChain.Select(l => new ChainLayerView(l.Path, l.Format))]);
}
