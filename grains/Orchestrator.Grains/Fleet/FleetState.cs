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
