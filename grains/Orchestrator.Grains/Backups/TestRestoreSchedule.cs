namespace Orchestrator.Grains.Backups;

/// <summary>When a policy's test_restore is due for a VM after one of its runs completed.</summary>
public static class TestRestoreSchedule
{
    /// <summary>
    /// Due when the VM was never tested, when <see cref="TestRestoreSpec.EveryRuns"/> backups completed since the last
    /// test began, or when <see cref="TestRestoreSpec.Every"/> has passed since then (whichever the spec sets).
    /// </summary>
    public static bool IsDue(TestRestoreSpec spec, DateTimeOffset? lastTestAt, int completedRunsSinceLastTest, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (lastTestAt is not { } last)
        {
            return true;
        }

        return (spec.EveryRuns > 0 && completedRunsSinceLastTest >= spec.EveryRuns)
            || (spec.Every is { } every && now - last >= every);
    }

    /// <summary>An RTO is missed when the last proven restore booted slower than it, or when there is none.</summary>
    public static bool RtoMissed(TimeSpan? rto, double? lastProvenBootSeconds) =>
        rto is { } bound && (lastProvenBootSeconds is not { } boot || boot > bound.TotalSeconds);
}
