using MessagePack;

namespace Orchestrator.Grains.VirtualMachines;

[GenerateSerializer]
[Alias("orchestrator.VirtualMachineState")]
[MessagePackObject]
public sealed record class VirtualMachineState
{
    /// <summary>False until inventory has seen the VM.</summary>
    [Id(0)]
    [Key(0)]
    public bool Known { get; set; }

    [Id(1)]
    [Key(1)]
    public Guid Uuid { get; set; }

    [Id(2)]
    [Key(2)]
    public VmPowerState PowerState { get; set; }

    [Id(3)]
    [Key(3)]
    public List<VmDiskRecord> Disks { get; set; } = [];

    [Id(4)]
    [Key(4)]
    public Dictionary<string, string> Labels { get; set; } = [];

    [Id(5)]
    [Key(5)]
    public long MemoryKiB { get; set; }

    [Id(6)]
    [Key(6)]
    public int VirtualCpus { get; set; }

    [Id(7)]
    [Key(7)]
    public DateTimeOffset FirstSeen { get; set; }

    [Id(8)]
    [Key(8)]
    public DateTimeOffset LastChanged { get; set; }

    /// <summary>False when the VM vanished from its host at a sync.</summary>
    [Id(9)]
    [Key(9)]
    public bool Present { get; set; }

    /// <summary>The one operation running on the VM (backup, checkpoint...), or null. Persisted: survives crashes.</summary>
    [Id(10)]
    [Key(10)]
    public VmOperation? Operation { get; set; }

    // Keys 20-39: internal checkpoints. Keys 40-59: live backups.

    /// <summary>The live-backup run in progress (not Completed or Failed), or null.</summary>
    [Id(40)]
    [Key(40)]
    public Backups.BackupRunState? ActiveBackup { get; set; }

    /// <summary>Finished runs, oldest first.</summary>
    [Id(41)]
    [Key(41)]
    public List<Backups.BackupRunState> BackupHistory { get; set; } = [];
}

/// <summary>What holds a VM's one-operation-at-a-time lock.</summary>
[GenerateSerializer]
[Alias("orchestrator.VmOperation")]
[MessagePackObject]
public sealed record class VmOperation
{
    /// <summary>"backup", "checkpoint-create", "checkpoint-revert", "checkpoint-delete"...</summary>
    [Id(0)]
    [Key(0)]
    public string Kind { get; set; } = "";

    [Id(1)]
    [Key(1)]
    public string Id { get; set; } = "";

    [Id(2)]
    [Key(2)]
    public DateTimeOffset StartedAt { get; set; }
}

[GenerateSerializer]
[Alias("orchestrator.VmDiskRecord")]
[MessagePackObject]
public sealed record class VmDiskRecord
{
    [Id(0)]
    [Key(0)]
    public string Target { get; set; } = "";

    [Id(1)]
    [Key(1)]
    public string SourcePath { get; set; } = "";

    [Id(2)]
    [Key(2)]
    public string Format { get; set; } = "";

    [Id(3)]
    [Key(3)]
    public int ChainDepth { get; set; }
}
