using Orleans.Concurrency;

namespace Orchestrator.Grains.Policies;

/// <summary>
/// One host's part of a policy's runs (key: <c>host/policy</c>; policy names hold no '/'). Placed on the host's silo
/// (on the calling silo while the host has none), it drives that host's VMs of a run: a queue of waiting VMs and a
/// running count, admitted up to <c>min(per_host, grant)</c>, where the grant is its share of the fleet budget
/// handed out by the policy grain (the coordinator). See <see cref="PolicyHostRunGrain"/>.
/// </summary>
[Alias("orchestrator.IPolicyHostRunGrain")]
public interface IPolicyHostRunGrain : IGrainWithStringKey
{
    /// <summary>Stores the part's VMs (once) and starts driving them. Idempotent per run id.</summary>
    [Alias("Start")]
    Task<PolicyHostRunStatus> StartAsync(PolicyHostRunStart start, CancellationToken cancellationToken = default);

    /// <summary>
    /// The coordinator's grant (cumulative total, the largest one wins) and its liveness probe: activates (and so
    /// recovers) the part, and answers where it stands. Known is false when the part never stored that run.
    /// </summary>
    [AlwaysInterleave]
    [Alias("Sync")]
    Task<PolicyHostRunStatus> SyncAsync(string runId, int granted, CancellationToken cancellationToken = default);

    /// <summary>The VMs of the given runs this part holds (runs it does not know, or trimmed, are absent).</summary>
    [AlwaysInterleave]
    [Alias("GetTargets")]
    Task<IReadOnlyList<PolicyHostRunTargets>> GetTargetsAsync(IReadOnlyList<string> runIds, CancellationToken cancellationToken = default);

    /// <summary>Returns the part's version of the run once it is above <paramref name="afterVersion"/>, the part ended, or after <paramref name="maxWait"/>.</summary>
    [AlwaysInterleave]
    [Alias("WaitChange")]
    Task<long> WaitChangeAsync(string runId, long afterVersion, TimeSpan maxWait, CancellationToken cancellationToken = default);

    /// <summary>
    /// The targets of a run that changed since <paramref name="sinceVersion"/> of this part's activation
    /// <paramref name="epoch"/> (from the part's in-memory change log: O(changes)); every target (Full) when the epoch
    /// is another activation's or 0. Null when the part does not hold the run.
    /// </summary>
    [AlwaysInterleave]
    [Alias("GetChanges")]
    Task<PolicyHostRunChanges?> GetChangesAsync(string runId, long epoch, long sinceVersion, CancellationToken cancellationToken = default);

    /// <summary>Returns once the run's version is above <paramref name="afterVersion"/> of <paramref name="epoch"/> (another epoch: at once), it ended, or after <paramref name="maxWait"/>.</summary>
    [AlwaysInterleave]
    [Alias("WaitChangeSince")]
    Task WaitChangeSinceAsync(string runId, long epoch, long afterVersion, TimeSpan maxWait, CancellationToken cancellationToken = default);

    /// <summary>Drops the part's run history (the policy is being deleted); refused while a run is in progress.</summary>
    [Alias("Clear")]
    Task ClearAsync(CancellationToken cancellationToken = default);
}

/// <summary>The coordinator's side of the parts' messages (implemented by the policy grain, same key).</summary>
[Alias("orchestrator.IPolicyRunCoordinator")]
public interface IPolicyRunCoordinator : IGrainWithStringKey
{
    /// <summary>
    /// A part handed back budget (its cumulative <see cref="PolicyHostRunStatus.Returned"/>, already persisted by the
    /// part) or ended (then with its counts and the VMs to retry when the host is back). Idempotent.
    /// </summary>
    [Alias("ReportPart")]
    Task ReportPartAsync(string host, PolicyHostRunStatus status, CancellationToken cancellationToken = default);

    /// <summary>A recovering part asks for its grant (cumulative); 0 when the run is not the active one.</summary>
    [AlwaysInterleave]
    [Alias("GetGrant")]
    Task<int> GetGrantAsync(string host, string runId, CancellationToken cancellationToken = default);
}

/// <summary>What a part needs to run its host's VMs of one run.</summary>
[GenerateSerializer]
[Alias("orchestrator.PolicyHostRunStart")]
public sealed record PolicyHostRunStart(
    [property: Id(0)] string Policy,
    [property: Id(1)] string RunId,
    [property: Id(2)] int PolicyVersion,
    [property: Id(3)] PolicySpecRecord Spec,
    [property: Id(4)] DateTimeOffset StartedAt,
    [property: Id(5)] string? TraceParent,
    [property: Id(6)] List<PolicyTargetRecord> Targets,
    [property: Id(7)] int Granted);

/// <summary>Where a part stands in one run.</summary>
[GenerateSerializer]
[Alias("orchestrator.PolicyHostRunStatus")]
public sealed record PolicyHostRunStatus(
    [property: Id(0)] string RunId,
    [property: Id(1)] bool Known,
    [property: Id(2)] bool Done,
    [property: Id(3)] int Returned,
    [property: Id(4)] int Waiting,
    [property: Id(5)] int Succeeded,
    [property: Id(6)] int Failed,
    [property: Id(7)] int Skipped,
    [property: Id(8)] IReadOnlyList<PendingRetryRecord> Retries,
    [property: Id(9)] long Version)
{
    public static PolicyHostRunStatus Unknown(string runId) => new(runId, false, false, 0, 0, 0, 0, 0, [], 0);
}

/// <summary>The VMs of one run on one host, as clients see them.</summary>
[GenerateSerializer]
[Alias("orchestrator.PolicyHostRunTargets")]
public sealed record PolicyHostRunTargets(
    [property: Id(0)] string RunId,
    [property: Id(1)] IReadOnlyList<PolicyTargetView> Targets,
    [property: Id(2)] long Version);

/// <summary>A part's targets that changed since a watcher's cursor (all of them when <see cref="Full"/>), and where it stands now.</summary>
[GenerateSerializer]
[Alias("orchestrator.PolicyHostRunChanges")]
public sealed record PolicyHostRunChanges(
    [property: Id(0)] string RunId,
    [property: Id(1)] long Epoch,
    [property: Id(2)] long Version,
    [property: Id(3)] bool Full,
    [property: Id(4)] bool Done,
    [property: Id(5)] IReadOnlyList<PolicyTargetView> Targets,
    [property: Id(6)] PolicyRunCounts Counts);
