namespace Orchestrator;

/// <summary>
/// Internal (qcow2) checkpoints of one VM and their schedule. Implemented by the VM grain (key: host/vm), so every
/// checkpoint operation runs on the VM's own host and under its one-operation-at-a-time lock.
/// </summary>
[Alias("orchestrator.ICheckpointOperations")]
public interface ICheckpointOperations : IGrainWithStringKey
{
    /// <summary>
    /// Takes a checkpoint: disk + memory of a running (or paused) VM, disk only of a shut-off one. The VM's pause
    /// is measured from its own suspend/resume events and recorded. <paramref name="name"/> null picks
    /// <c>cp-yyyyMMdd-HHmmss</c> (UTC). Refused (FailedPrecondition) for raw disks and disks with a backing chain
    /// (an active backup overlay); Conflict while another operation runs; AlreadyExists for a taken name.
    /// </summary>
    [Alias("CreateCheckpoint")]
    Task<CheckpointView> CreateCheckpointAsync(string? name = null, CancellationToken cancellationToken = default);

    /// <summary>The VM's checkpoints as the hypervisor has them, oldest first, with what the orchestrator recorded.</summary>
    [Alias("ListCheckpoints")]
    Task<IReadOnlyList<CheckpointView>> ListCheckpointsAsync(CancellationToken cancellationToken = default);

    /// <summary>Reverts the VM to a checkpoint; NotFound for an unknown name.</summary>
    [Alias("RevertCheckpoint")]
    Task<CheckpointRevertResult> RevertCheckpointAsync(string name, CheckpointRevertTarget target = CheckpointRevertTarget.Default, CancellationToken cancellationToken = default);

    /// <summary>Deletes a checkpoint; NotFound for an unknown name.</summary>
    [Alias("DeleteCheckpoint")]
    Task DeleteCheckpointAsync(string name, CancellationToken cancellationToken = default);

    /// <summary>
    /// Sets (or replaces) the VM's checkpoint schedule. InvalidArgument naming the field (schedule.cron,
    /// schedule.time_zone, schedule.jitter, retention.keep_last, ...) for bad input.
    /// </summary>
    [Alias("SetCheckpointSchedule")]
    Task<CheckpointScheduleView> SetCheckpointScheduleAsync(CheckpointSchedule schedule, CancellationToken cancellationToken = default);

    /// <summary>The VM's schedule with its next due time and last run, or null when it has none.</summary>
    [Alias("GetCheckpointSchedule")]
    Task<CheckpointScheduleView?> GetCheckpointScheduleAsync(CancellationToken cancellationToken = default);

    /// <summary>Removes the schedule (its checkpoints stay). Returns false when there was none.</summary>
    [Alias("DeleteCheckpointSchedule")]
    Task<bool> DeleteCheckpointScheduleAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// A checkpoint for a policy run: named <c>pol-POLICY-yyyyMMdd-HHmmss</c> after the run's start (UTC; the same
    /// run asking again gets the same checkpoint back), origin Policy, then the
    /// policy's own checkpoints of this VM are pruned by <see cref="PolicyCheckpointRequest.Retention"/>.
    /// Same refusals as <see cref="CreateCheckpointAsync"/>.
    /// </summary>
    [Alias("CreatePolicyCheckpoint")]
    Task<PolicyCheckpointResult> CreatePolicyCheckpointAsync(PolicyCheckpointRequest request, CancellationToken cancellationToken = default);
}

[GenerateSerializer]
[Alias("orchestrator.PolicyCheckpointRequest")]
public sealed record PolicyCheckpointRequest(
    [property: Id(0)] string Policy,
    [property: Id(1)] int PolicyVersion,
    [property: Id(2)] string RunId,
    [property: Id(3)] RetentionPolicy Retention,
    [property: Id(4)] DateTimeOffset RunStartedAt);

[GenerateSerializer]
[Alias("orchestrator.PolicyCheckpointResult")]
public sealed record PolicyCheckpointResult(
    [property: Id(0)] CheckpointView Checkpoint,
    [property: Id(1)] IReadOnlyList<string> Pruned);

/// <summary>Who made a checkpoint.</summary>
public enum CheckpointOrigin
{
    /// <summary>Found on the hypervisor, not made by the orchestrator (e.g. virsh snapshot-create-as).</summary>
    External = 0,
    Manual = 1,
    Schedule = 2,

    /// <summary>Made by a fleet policy of kind checkpoint (named pol-POLICY-...).</summary>
    Policy = 3,
}

/// <summary>Where a recorded pause duration comes from.</summary>
public enum PauseSource
{
    /// <summary>The VM was not running, so it was not paused.</summary>
    None = 0,

    /// <summary>From the VM's own Suspended and Resumed lifecycle events.</summary>
    Events = 1,

    /// <summary>No suspend/resume events arrived: the duration of the whole hypervisor call (an upper bound).</summary>
    CallDuration = 2,

    /// <summary>Not known (the checkpoint was not made by the orchestrator, or was adopted after a crash).</summary>
    Unknown = 3,
}

/// <summary>What state a revert leaves the VM in.</summary>
public enum CheckpointRevertTarget
{
    /// <summary>Running for a checkpoint with memory; as saved (shut off) for a disk-only one.</summary>
    Default = 0,
    Running = 1,
    Paused = 2,
}

[GenerateSerializer]
[Alias("orchestrator.CheckpointView")]
public sealed record CheckpointView(
    [property: Id(0)] string Name,
    [property: Id(1)] DateTimeOffset CreatedAt,
    [property: Id(2)] bool WithMemory,
    [property: Id(3)] long? SizeBytes,
    [property: Id(4)] TimeSpan? Pause,
    [property: Id(5)] PauseSource PauseSource,
    [property: Id(6)] CheckpointOrigin Origin,
    [property: Id(7)] VmPowerState StateAtCheckpoint,
    [property: Id(8)] TimeSpan? Duration);

[GenerateSerializer]
[Alias("orchestrator.CheckpointRevertResult")]
public sealed record CheckpointRevertResult(
    [property: Id(0)] string Name,
    [property: Id(1)] VmPowerState PowerState,
    [property: Id(2)] TimeSpan Duration);

/// <summary>Retention of scheduled checkpoints: what survives pruning (restic "forget" semantics, see the README).</summary>
[GenerateSerializer]
[Alias("orchestrator.RetentionPolicy")]
public sealed record RetentionPolicy(
    [property: Id(0)] int KeepLast = 0,
    [property: Id(1)] int Hourly = 0,
    [property: Id(2)] int Daily = 0,
    [property: Id(3)] int Weekly = 0,
    [property: Id(4)] int Monthly = 0);

/// <summary>
/// A cron schedule (Cronos; 5 fields, or 6 with seconds first) in a time zone (IANA id, default UTC), with an
/// optional jitter: each VM runs at a fixed offset within [0, jitter] after every occurrence.
/// </summary>
[GenerateSerializer]
[Alias("orchestrator.CheckpointSchedule")]
public sealed record CheckpointSchedule(
    [property: Id(0)] string Cron,
    [property: Id(1)] string TimeZone,
    [property: Id(2)] TimeSpan Jitter,
    [property: Id(3)] RetentionPolicy Retention);

/// <summary>The last scheduled run.</summary>
[GenerateSerializer]
[Alias("orchestrator.ScheduledRunView")]
public sealed record ScheduledRunView(
    [property: Id(0)] DateTimeOffset At,
    [property: Id(1)] DateTimeOffset DueAt,
    [property: Id(2)] string? Checkpoint,
    [property: Id(3)] int SkippedSlots,
    [property: Id(4)] string? Error,
    [property: Id(5)] IReadOnlyList<string> Pruned);

[GenerateSerializer]
[Alias("orchestrator.CheckpointScheduleView")]
public sealed record CheckpointScheduleView(
    [property: Id(0)] string Host,
    [property: Id(1)] string Vm,
    [property: Id(2)] CheckpointSchedule Schedule,
    [property: Id(3)] DateTimeOffset NextDueAt,
    [property: Id(4)] ScheduledRunView? LastRun,
    [property: Id(5)] DateTimeOffset UpdatedAt,
    [property: Id(6)] int Runs,
    [property: Id(7)] IReadOnlyList<string> ScheduledCheckpoints,
    [property: Id(8)] IReadOnlyList<ScheduledRunView> RecentRuns)
{
    public string Key => GrainKeys.Vm(Host, Vm);
}

/// <summary>Checkpoint names: what the orchestrator accepts and the names it picks.</summary>
public static partial class CheckpointNames
{
    /// <summary>Prefix of the names the schedule picks (auto-yyyyMMdd-HHmmss, UTC).</summary>
    public const string SchedulePrefix = "auto-";

    /// <summary>Prefix of the names picked for a manual checkpoint without a name (cp-yyyyMMdd-HHmmss, UTC).</summary>
    public const string ManualPrefix = "cp-";

    /// <summary>Throws an InvalidArgument naming <paramref name="field"/> unless the name is 1-64 of [A-Za-z0-9._-], starting with a letter or digit.</summary>
    public static string Validate(string? name, string field = "name")
    {
        if (string.IsNullOrWhiteSpace(name))
        {
            throw OrchestratorException.InvalidArgument(field, "a checkpoint name is required");
        }

        if (!NamePattern().IsMatch(name))
        {
            throw OrchestratorException.InvalidArgument(field, $"{OrchestratorException.Quote(name)} is not a valid checkpoint name (1-64 letters, digits, '.', '_' or '-', starting with a letter or digit)");
        }

        return name;
    }

    public static string ForTime(string prefix, DateTimeOffset at) =>
        prefix + at.UtcDateTime.ToString("yyyyMMdd-HHmmss", System.Globalization.CultureInfo.InvariantCulture);

    [System.Text.RegularExpressions.GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\\z")]
    private static partial System.Text.RegularExpressions.Regex NamePattern();
}
