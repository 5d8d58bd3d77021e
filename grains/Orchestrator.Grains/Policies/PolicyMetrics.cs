using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace Orchestrator.Grains.Policies;

/// <summary>
/// Metrics of policy runs, on the <see cref="Telemetry.Meter"/> ("Orchestrator"). Recording is a counter add or a
/// histogram record with a stack-allocated tag list (no await, no lookup), so it costs nothing next to the state write
/// that accompanies every change it records. The two gauges read a per-silo registry that each policy grain activation
/// updates when it persists its state.
/// </summary>
public static class PolicyMetrics
{
    public const string RunsName = "orchestrator.policy.runs";
    public const string RunDurationName = "orchestrator.policy.run.duration";
    public const string TargetsName = "orchestrator.policy.targets";
    public const string AdmissionWaitName = "orchestrator.policy.admission.wait";
    public const string PendingRetriesName = "orchestrator.policy.pending_retries";
    public const string ActiveRunsName = "orchestrator.policy.runs.active";

    /// <summary>Finished policy runs; tags policy, kind (live-backup|checkpoint), trigger (manual|schedule|retry), outcome (completed|partial|failed).</summary>
    public static readonly Counter<long> Runs = Telemetry.Meter.CreateCounter<long>(RunsName, "{run}", "Finished policy runs, by outcome");

    /// <summary>Start to end of a policy run (a run that could not start counts 0); tags policy, kind, outcome.</summary>
    public static readonly Histogram<double> RunDuration = Telemetry.Meter.CreateHistogram(
        RunDurationName,
        "s",
        "Policy run duration",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [1, 10, 30, 60, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400] });

    /// <summary>
    /// Targets (one VM in one run) that ended; tags policy, kind, host, status (succeeded|failed|skipped). No vm: this
    /// is recorded on the policy grain's silo for every VM of the fleet, and the SDK keeps at most 2000 attribute sets
    /// per instrument; per-VM outcomes are in orchestrator.backups (recorded on each VM's own host) and the run records.
    /// </summary>
    public static readonly Counter<long> Targets = Telemetry.Meter.CreateCounter<long>(TargetsName, "{vm}", "Policy run targets that ended, by status");

    /// <summary>
    /// How long a target waited for its admission slot: from the run's start (or, for a VM that answered busy, from the
    /// end of its back-off) to its admitted_at; tags policy, host.
    /// </summary>
    public static readonly Histogram<double> AdmissionWait = Telemetry.Meter.CreateHistogram(
        AdmissionWaitName,
        "s",
        "Time a policy target waited for admission",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200] });

    /// <summary>VMs skipped because their host was down, waiting for a retry run; tags policy, host.</summary>
    public static readonly ObservableUpDownCounter<long> PendingRetries = Telemetry.Meter.CreateObservableUpDownCounter(
        PendingRetriesName,
        ObservePendingRetries,
        "{vm}",
        "VMs skipped and waiting for their host to come back");

    /// <summary>Policy runs in progress (0 or 1 per policy); tag policy.</summary>
    public static readonly ObservableUpDownCounter<long> ActiveRuns = Telemetry.Meter.CreateObservableUpDownCounter(
        ActiveRunsName,
        ObserveActiveRuns,
        "{run}",
        "Policy runs in progress");

    // Per policy grain activation of this silo (a policy has one activation in the cluster; tests run several clusters
    // in one process, so the key is the activation, not the name).
    private static readonly ConcurrentDictionary<object, PolicyEntry> Activations = new(ReferenceEqualityComparer.Instance);

    private sealed record PolicyEntry(string Policy, bool Running, int PendingCount, KeyValuePair<string, int>[] PendingByHost);

    internal static void RecordRunEnded(string policy, PolicyRunRecord run)
    {
        var kind = BackupPolicyGrain.KindName(run.Spec.Kind);
        var outcome = OutcomeName(run.State);
        Runs.Add(1, new TagList { { "policy", policy }, { "kind", kind }, { "trigger", TriggerName(run.Trigger) }, { "outcome", outcome } });
        var seconds = run.EndedAt is { } ended ? Math.Max(0, (ended - run.StartedAt).TotalSeconds) : 0;
        RunDuration.Record(seconds, new TagList { { "policy", policy }, { "kind", kind }, { "outcome", outcome } });
    }

    /// <summary>
    /// Records a target about to end with <paramref name="status"/>; a target that already ended is not counted again
    /// (a failure while recording a success ends it a second time, as failed).
    /// </summary>
    internal static void RecordTargetEnded(string policy, PolicyKind kind, PolicyTargetRecord target, PolicyTargetStatus status)
    {
        if (target.IsTerminal)
        {
            return;
        }

        Targets.Add(1, new TagList
        {
            { "policy", policy },
            { "kind", BackupPolicyGrain.KindName(kind) },
            { "host", target.Host },
            { "status", StatusName(status) },
        });
    }

    /// <summary>Records the wait of a target just admitted (its AdmittedAt set).</summary>
    internal static void RecordAdmitted(string policy, DateTimeOffset runStartedAt, PolicyTargetRecord target)
    {
        if (target.AdmittedAt is not { } admitted)
        {
            return;
        }

        var since = target.NotBefore is { } notBefore && notBefore > runStartedAt ? notBefore : runStartedAt;
        AdmissionWait.Record(Math.Max(0, (admitted - since).TotalSeconds), new TagList { { "policy", policy }, { "host", target.Host } });
    }

    /// <summary>Publishes a policy activation's run-in-progress flag and waiting VMs (called whenever it persists its state).</summary>
    internal static void Publish(object owner, string policy, BackupPolicyState state)
    {
        if (!state.Exists)
        {
            Forget(owner);
            return;
        }

        var running = state.ActiveRun is { IsTerminal: false };
        var pending = state.PendingRetries;
        if (Activations.TryGetValue(owner, out var current) && current.Running == running && current.PendingCount == 0 && pending.Count == 0)
        {
            // The common case on the hot path: nothing to wait for before and after.
            return;
        }

        var byHost = pending.Count == 0
            ? []
            : pending.GroupBy(p => p.Host, StringComparer.Ordinal).Select(g => KeyValuePair.Create(g.Key, g.Count())).ToArray();
        Activations[owner] = new PolicyEntry(policy, running, pending.Count, byHost);
    }

    /// <summary>The activation is going away or its policy was deleted: it reports nothing more.</summary>
    internal static void Forget(object owner) => Activations.TryRemove(owner, out _);

    private static IEnumerable<Measurement<long>> ObservePendingRetries()
    {
        foreach (var entry in Activations.Values)
        {
            foreach (var (host, count) in entry.PendingByHost)
            {
                yield return new Measurement<long>(count, new KeyValuePair<string, object?>("policy", entry.Policy), new KeyValuePair<string, object?>("host", host));
            }
        }
    }

    private static IEnumerable<Measurement<long>> ObserveActiveRuns()
    {
        foreach (var entry in Activations.Values)
        {
            yield return new Measurement<long>(entry.Running ? 1 : 0, new KeyValuePair<string, object?>("policy", entry.Policy));
        }
    }

    private static string TriggerName(PolicyRunTrigger trigger) => trigger switch
    {
        PolicyRunTrigger.Schedule => "schedule",
        PolicyRunTrigger.Retry => "retry",
        _ => "manual",
    };

    private static string OutcomeName(PolicyRunState state) => state switch
    {
        PolicyRunState.Completed => "completed",
        PolicyRunState.Partial => "partial",
        _ => "failed",
    };

    private static string StatusName(PolicyTargetStatus status) => status switch
    {
        PolicyTargetStatus.Succeeded => "succeeded",
        PolicyTargetStatus.Skipped => "skipped",
        _ => "failed",
    };
}
