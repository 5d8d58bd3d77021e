using Orchestrator.Grains.Policies;
using Orchestrator.Grains.Storage;

namespace Orchestrator.UnitTests.Policies;

public sealed class PolicyStateSerializationTests
{
    private readonly MessagePackGrainStorageSerializer _serializer = new();

    [Fact]
    public void Deserialize_RunStoredBeforePerHostParts_KeepsItsTargetsAndHasNoParts()
    {
        // The stored shape before per-host parts: a run of keys 0-11 (no Parts) whose targets have keys 0-11.
        var state = new BackupPolicyState
        {
            Exists = true,
            Version = 3,
            ActiveRun = new PolicyRunRecord
            {
                RunId = "p-1",
                State = PolicyRunState.Running,
                Targets =
                [
                    new PolicyTargetRecord { Host = "kvm-01", Vm = "a", Status = PolicyTargetStatus.Running, BackupRun = "kvm-01/a/b-1" },
                    new PolicyTargetRecord { Host = "kvm-02", Vm = "b", Status = PolicyTargetStatus.Pending },
                ],
            },
        };
        var current = MessagePack.MessagePackSerializer.Deserialize<object?[]>(_serializer.Serialize(state).ToMemory());
        var run = (object?[])current[9]!;
        Assert.True(run.Length > 12, "key 12 (Parts) is written today");
        run = run.Take(12).ToArray();
        run[8] = ((object?[])run[8]!).Select(t => (object?)((object?[])t!).Take(12).ToArray()).ToArray();
        current[9] = run;
        var old = new BinaryData(MessagePack.MessagePackSerializer.Serialize(current));

        var back = _serializer.Deserialize<BackupPolicyState>(old);

        Assert.NotNull(back.ActiveRun);
        Assert.True(back.ActiveRun.HasInlineTargets);
        Assert.Empty(back.ActiveRun.Parts);
        Assert.Equal(["kvm-01/a", "kvm-02/b"], back.ActiveRun.Targets.Select(t => t.Key));
        Assert.Equal("kvm-01/a/b-1", back.ActiveRun.Targets[0].BackupRun);
        Assert.False(back.ActiveRun.Targets[1].RetryWhenBack);
    }

    [Fact]
    public void RoundTrip_RunHeaderWithParts_KeepsGrantsAndCounts()
    {
        var state = new BackupPolicyState
        {
            Exists = true,
            ActiveRun = new PolicyRunRecord
            {
                RunId = "p-2",
                Parts = [new PolicyRunPartRecord { Host = "kvm-01", TargetCount = 100, Granted = 7, Returned = 2, Waiting = 40, Version = 99 }],
            },
        };

        var back = _serializer.Deserialize<BackupPolicyState>(_serializer.Serialize(state));

        var part = Assert.Single(back.ActiveRun!.Parts);
        Assert.Equal((100, 7, 2, 40, 99L, 5), (part.TargetCount, part.Granted, part.Returned, part.Waiting, part.Version, part.Held));
        Assert.False(back.ActiveRun.HasInlineTargets);
    }
}
