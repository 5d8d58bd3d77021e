using Orchestrator.Grains.Policies;

namespace Orchestrator.UnitTests.Policies;

/// <summary>A part's in-memory change log of its run's targets: what a watcher gets since a version, counts, compaction.</summary>
public sealed class PolicyRunChangeLogTests
{
    private static PolicyHostRunRecord Run(int targets) => new()
    {
        RunId = "p-20261207-000000-abcdef",
        Version = 100,
        Targets = [.. Enumerable.Range(0, targets).Select(i => new PolicyTargetRecord { Host = "kvm-01", Vm = $"vm-{i:D3}" })],
    };

    [Fact]
    public void Since_ChangesAfterAVersion_EachChangedTargetOnceWithItsNewestChange()
    {
        var run = Run(5);
        var log = new PolicyRunChangeLog(run);
        var t = run.Targets;

        t[1].Status = PolicyTargetStatus.Running;
        log.Record(t[1], 101);
        t[3].Status = PolicyTargetStatus.Running;
        log.Record(t[3], 102);
        t[1].Status = PolicyTargetStatus.Succeeded;
        log.Record(t[1], 103);

        Assert.Equal(["vm-003", "vm-001"], log.Since(100)!.Select(x => x.Vm));
        Assert.Equal(["vm-003", "vm-001"], log.Since(101)!.Select(x => x.Vm));
        Assert.Equal(["vm-001"], log.Since(102)!.Select(x => x.Vm));
        Assert.Empty(log.Since(103)!);
        Assert.Null(log.Since(99));
        Assert.Equal(new PolicyRunCounts(3, 1, 1, 0, 0), log.Counts);
    }

    [Fact]
    public void Record_ManyChangesOfFewTargets_LogStaysBoundedAndAnswersTheSame()
    {
        var run = Run(10);
        var log = new PolicyRunChangeLog(run);
        var version = 100L;
        for (var round = 0; round < 1000; round++)
        {
            var target = run.Targets[round % 3];
            target.Attempts++;
            log.Record(target, ++version);
        }

        Assert.True(log.Entries <= (2 * 10) + 64 + 1, $"{log.Entries} entries for 10 targets");
        Assert.Equal(["vm-000"], log.Since(version - 1)!.Select(x => x.Vm));
        Assert.Equal(3, log.Since(100)!.Count);
        Assert.Equal(10, log.Counts.Pending);
    }

    [Fact]
    public void Record_TargetOfAnotherRun_Ignored()
    {
        var log = new PolicyRunChangeLog(Run(2));

        log.Record(new PolicyTargetRecord { Host = "kvm-01", Vm = "vm-000", Status = PolicyTargetStatus.Failed }, 101);

        Assert.Empty(log.Since(100)!);
        Assert.Equal(new PolicyRunCounts(2, 0, 0, 0, 0), log.Counts);
    }
}
