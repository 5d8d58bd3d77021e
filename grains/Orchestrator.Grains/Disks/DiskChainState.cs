using MessagePack;

namespace Orchestrator.Grains.Disks;

[GenerateSerializer]
[Alias("orchestrator.DiskChainState")]
[MessagePackObject]
public sealed record class DiskChainState
{
    [Id(0)]
    [Key(0)]
    public bool Known { get; set; }

    /// <summary>Active image first, base last.</summary>
    [Id(1)]
    [Key(1)]
    public List<ChainLayerRecord> Layers { get; set; } = [];

    [Id(2)]
    [Key(2)]
    public DateTimeOffset LastChanged { get; set; }
}

/// <summary>One image of a disk's backing chain, as the domain XML names it (the chain grain's layers, a backup run's frozen chain).</summary>
[GenerateSerializer]
[Alias("orchestrator.ChainLayerRecord")]
[MessagePackObject]
public sealed record class ChainLayerRecord
{
    [Id(0)]
    [Key(0)]
    public string Path { get; set; } = "";

    [Id(1)]
    [Key(1)]
    public string Format { get; set; } = "";
}
