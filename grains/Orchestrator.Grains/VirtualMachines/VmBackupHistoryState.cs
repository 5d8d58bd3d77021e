using MessagePack;

namespace Orchestrator.Grains.VirtualMachines;

/// <summary>
/// A VM's finished backup runs, oldest first, in their own persisted state ("vm-history") apart from the hot
/// <see cref="VirtualMachineState"/>: written once when a run ends, read on demand (never kept in memory whole).
/// A finished run carries no domain XML: it is in its backup set's manifest.
/// </summary>
[GenerateSerializer]
[Alias("orchestrator.VmBackupHistoryState")]
[MessagePackObject]
public sealed record class VmBackupHistoryState
{
    [Id(0)]
    [Key(0)]
    public List<Backups.BackupRunState> Runs { get; set; } = [];
}
