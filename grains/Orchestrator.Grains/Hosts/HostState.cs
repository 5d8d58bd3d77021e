using MessagePack;

namespace Orchestrator.Grains.Hosts;

[GenerateSerializer]
[Alias("orchestrator.HostState")]
[MessagePackObject]
public sealed record class HostState
{
    [Id(0)]
    [Key(0)]
    public string Uri { get; set; } = "";

    [Id(1)]
    [Key(1)]
    public string Driver { get; set; } = "";

    [Id(2)]
    [Key(2)]
    public string LibvirtVersion { get; set; } = "";

    [Id(3)]
    [Key(3)]
    public string HypervisorVersion { get; set; } = "";

    [Id(4)]
    [Key(4)]
    public DateTimeOffset? LastSync { get; set; }

    [Id(5)]
    [Key(5)]
    public string? LastSyncError { get; set; }

    /// <summary>Names of every VM inventory has seen on this host.</summary>
    [Id(6)]
    [Key(6)]
    public List<string> Vms { get; set; } = [];
}
