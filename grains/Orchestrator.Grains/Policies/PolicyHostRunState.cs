using MessagePack;

namespace Orchestrator.Grains.Policies;

/// <summary>
/// A policy-host part's hot state: the run in progress on this host (its VMs, written once at start, then at most
/// one throttled checkpoint every <see cref="PolicyOptions.CheckpointInterval"/>, then once at the end).
/// </summary>
[GenerateSerializer]
[Alias("orchestrator.PolicyHostRunState")]
[MessagePackObject]
public sealed record class PolicyHostRunState
{
    [Id(0)]
    [Key(0)]
    public PolicyHostRunRecord? Active { get; set; }
}

/// <summary>A part's finished runs with their VMs, oldest first (written once per run, trimmed like the policy's history).</summary>
[GenerateSerializer]
[Alias("orchestrator.PolicyHostRunHistoryState")]
[MessagePackObject]
public sealed record class PolicyHostRunHistoryState
{
    [Id(0)]
    [Key(0)]
    public List<PolicyHostRunRecord> Runs { get; set; } = [];
}

[GenerateSerializer]
[Alias("orchestrator.PolicyHostRunRecord")]
[MessagePackObject]
public sealed record class PolicyHostRunRecord
{
    [Id(0)]
    [Key(0)]
    public string Policy { get; set; } = "";

    [Id(1)]
    [Key(1)]
    public string RunId { get; set; } = "";

    [Id(2)]
    [Key(2)]
    public int PolicyVersion { get; set; }

    [Id(3)]
    [Key(3)]
    public PolicySpecRecord Spec { get; set; } = new();

    [Id(4)]
    [Key(4)]
    public DateTimeOffset StartedAt { get; set; }

    [Id(5)]
    [Key(5)]
    public string? TraceParent { get; set; }

    [Id(6)]
    [Key(6)]
    public List<PolicyTargetRecord> Targets { get; set; } = [];

    /// <summary>The largest cumulative grant the part was told (the coordinator may know a larger one).</summary>
    [Id(7)]
    [Key(7)]
    public int Granted { get; set; }

    /// <summary>Slots handed back so far (cumulative): persisted before the coordinator is told.</summary>
    [Id(8)]
    [Key(8)]
    public int Returned { get; set; }

    [Id(9)]
    [Key(9)]
    public long Version { get; set; }

    [Id(10)]
    [Key(10)]
    public DateTimeOffset? EndedAt { get; set; }

    [IgnoreMember]
    public bool Done => EndedAt is not null;
}
