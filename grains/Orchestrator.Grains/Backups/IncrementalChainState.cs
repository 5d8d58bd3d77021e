using MessagePack;

namespace Orchestrator.Grains.Backups;

/// <summary>
/// One VM's chain of backup-job runs: a full, then incrementals, each set's qcow2 images backed by the previous set's.
/// Small (one checkpoint XML, a few names): kept in the VM's hot state and written once per completed run.
/// </summary>
[GenerateSerializer]
[Alias("orchestrator.IncrementalChainState")]
[MessagePackObject]
public sealed record class IncrementalChainState
{
    /// <summary>The newest checkpoint: the next incremental copies what changed since it.</summary>
    [Id(0)]
    [Key(0)]
    public string Checkpoint { get; set; } = "";

    /// <summary>That checkpoint's XML as libvirt gave it (with the domain definition), to define it again if lost.</summary>
    [Id(1)]
    [Key(1)]
    public string CheckpointXml { get; set; } = "";

    /// <summary>The newest completed run of the chain: the parent of the next incremental.</summary>
    [Id(2)]
    [Key(2)]
    public string LastRunId { get; set; } = "";

    [Id(3)]
    [Key(3)]
    public string LastSetPath { get; set; } = "";

    /// <summary>The chain's full.</summary>
    [Id(4)]
    [Key(4)]
    public string FullRunId { get; set; } = "";

    [Id(5)]
    [Key(5)]
    public DateTimeOffset FullAt { get; set; }

    /// <summary>Runs in the chain, the full counted.</summary>
    [Id(6)]
    [Key(6)]
    public int Length { get; set; }

    /// <summary>The disks of the newest set: target, source image, the copy's file and format.</summary>
    [Id(7)]
    [Key(7)]
    public List<IncrementalChainDisk> Disks { get; set; } = [];

    /// <summary>The VM the chain belongs to (a VM defined again under the same name with a new uuid is another VM).</summary>
    [Id(8)]
    [Key(8)]
    public Guid VmUuid { get; set; }

    /// <summary>Set when something changed the disks behind the bitmaps' back: the next run is a full, with this reason.</summary>
    [Id(9)]
    [Key(9)]
    public string? InvalidatedBy { get; set; }
}

[GenerateSerializer]
[Alias("orchestrator.IncrementalChainDisk")]
[MessagePackObject]
public sealed record class IncrementalChainDisk
{
    [Id(0)]
    [Key(0)]
    public string Target { get; set; } = "";

    [Id(1)]
    [Key(1)]
    public string SourcePath { get; set; } = "";

    [Id(2)]
    [Key(2)]
    public string SourceFormat { get; set; } = "";

    /// <summary>The disk's image in the newest set (absolute) and its format.</summary>
    [Id(3)]
    [Key(3)]
    public string ImagePath { get; set; } = "";

    [Id(4)]
    [Key(4)]
    public string ImageFormat { get; set; } = "";
}
