using Orchestrator.Grains.Checkpoints;
using Orchestrator.Grains.Policies;

namespace Orchestrator.Grains.Backups;

/// <summary>
/// What a backup request may ask for, checked by the gRPC service before it calls the grain and by the grain again
/// (any caller, a policy too). InvalidArgument naming the request field (its name in StartBackupRequest).
/// </summary>
public static class BackupRequestRules
{
    /// <summary>Longest freeze a request may ask for.</summary>
    public static readonly TimeSpan MaxFreezeBudget = TimeSpan.FromMinutes(10);

    public static void Validate(BackupRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (!Enum.IsDefined(request.Quiesce))
        {
            throw OrchestratorException.InvalidArgument("quiesce", $"{(int)request.Quiesce} is not a quiesce mode (off, try or required)");
        }

        if (request.BandwidthBytesPerSecond is < 0 or > PolicyValidator.MaxBandwidth)
        {
            throw OrchestratorException.InvalidArgument("bandwidth_bytes_per_second", $"must be between 0 (unlimited) and {PolicyValidator.MaxBandwidth} (1 TiB/s), not {request.BandwidthBytesPerSecond}");
        }

        if (request.FreezeBudget <= TimeSpan.Zero || request.FreezeBudget > MaxFreezeBudget)
        {
            throw OrchestratorException.InvalidArgument("freeze_budget", "must be between 1 ms and 10 minutes");
        }

        if (request.Retention is { } retention)
        {
            ValidateRetention(retention);
        }

        if (request.FullEveryRuns is < 0 or > MaxFullEveryRuns)
        {
            throw OrchestratorException.InvalidArgument("full_every", $"a count of runs must be between 0 (no limit) and {MaxFullEveryRuns}, not {request.FullEveryRuns}");
        }

        if (request.FullEveryAge is { } age && (age < TimeSpan.FromMinutes(1) || age > MaxFullEveryAge))
        {
            throw OrchestratorException.InvalidArgument("full_every", $"a duration must be between 1 minute and {MaxFullEveryAge.TotalDays:F0} days, not {age}");
        }

        if (!request.Incremental && (request.FullEveryRuns != 0 || request.FullEveryAge is not null))
        {
            throw OrchestratorException.InvalidArgument("full_every", "applies only to incremental backups (level auto)");
        }
    }

    /// <summary>Longest chain a policy may ask for before the next full.</summary>
    public const int MaxFullEveryRuns = 1000;

    /// <summary>Oldest a chain's full may be asked to get before the next full.</summary>
    public static readonly TimeSpan MaxFullEveryAge = TimeSpan.FromDays(366);

    /// <summary>
    /// Each count 0 to <see cref="CheckpointSchedulePlanner.MaxRetentionCount"/> and at least one above 0: all zero
    /// would keep nothing, so pruning would delete every backup set of the VM, the new one too.
    /// </summary>
    public static void ValidateRetention(BackupRetention retention)
    {
        ArgumentNullException.ThrowIfNull(retention);
        (string Field, int Count)[] counts =
        [
            ("retention.keep_last", retention.KeepLast),
            ("retention.keep_daily", retention.KeepDaily),
            ("retention.keep_weekly", retention.KeepWeekly),
            ("retention.keep_monthly", retention.KeepMonthly),
        ];
        foreach (var (field, count) in counts)
        {
            if (count is < 0 or > CheckpointSchedulePlanner.MaxRetentionCount)
            {
                throw OrchestratorException.InvalidArgument(field, $"must be between 0 and {CheckpointSchedulePlanner.MaxRetentionCount}, not {count}");
            }
        }

        if (counts.All(c => c.Count == 0))
        {
            throw OrchestratorException.InvalidArgument("retention", "set at least one of keep_last, keep_daily, keep_weekly, keep_monthly above 0 (all 0 would prune every backup set of the VM, this one too); leave retention out to keep every set");
        }
    }
}
