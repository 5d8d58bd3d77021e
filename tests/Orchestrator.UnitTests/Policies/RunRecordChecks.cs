namespace Orchestrator.UnitTests.Policies;

/// <summary>Checks computed from a policy run's record alone.</summary>
internal static class RunRecordChecks
{
    /// <summary>Most slots held at once, from the run record's admitted/released times (all, or of one host).</summary>
    public static int MaxOverlap(IEnumerable<PolicyTargetView> targets)
    {
        var edges = targets
            .Where(t => t.AdmittedAt is not null)
            .SelectMany(t => new[] { (At: t.AdmittedAt!.Value, Delta: 1), (At: t.ReleasedAt!.Value, Delta: -1) })
            .OrderBy(e => e.At)
            .ThenBy(e => e.Delta);
        int current = 0, max = 0;
        foreach (var edge in edges)
        {
            current += edge.Delta;
            max = Math.Max(max, current);
        }

        return max;
    }
}
