using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace Orchestrator.Grains.Fleet;

/// <summary>
/// Compliance as observable gauges, on the <see cref="Telemetry.Meter"/> ("Orchestrator").
/// <para>
/// The numbers come from the fleet grain, and an exporter's callback must not call a grain (it runs on the exporter's
/// thread, outside any grain turn, and must not block). So the fleet grain publishes a snapshot here whenever it
/// computes compliance: on every <c>GetComplianceAsync</c> and on a grain timer
/// (<c>Orchestrator:Policies:ComplianceMetricsInterval</c>), and the callbacks only read the latest snapshot. The
/// timer sums the per-status counts each host's index shard computes; no VM row crosses the wire for it.
/// </para>
/// <para>
/// Who reports: only the silo whose activation of the fleet grain published the snapshot. The activation withdraws it
/// when it deactivates (the grain moves, or its silo shuts down); a silo that dies takes its process, and so its
/// snapshot, with it; a snapshot nobody refreshed for <see cref="StaleAfter"/> is not reported. So at most one silo
/// reports at a time, apart from the seconds of a handover. Each measurement carries <c>fleet</c> (the Orleans
/// ServiceId) rather than the reporting silo: the numbers describe the fleet, whichever silo computed them, so the
/// series keep their labels across a move (the exporting silo still shows in the resource, e.g. Prometheus'
/// <c>instance</c>). Dashboards read them with <c>max by (fleet, status)</c>, which also rides over the handover
/// window in which a collector may still hold the previous silo's last values.
/// </para>
/// </summary>
public static class ComplianceMetrics
{
    public const string VmsName = "orchestrator.compliance.vms";
    public const string PolicyVmsName = "orchestrator.compliance.policy_vms";

    /// <summary>A snapshot older than this is not reported (its activation is gone without withdrawing it).</summary>
    public static readonly TimeSpan StaleAfter = TimeSpan.FromMinutes(5);

    /// <summary>The status attribute values, by <see cref="ComplianceStatus"/>.</summary>
    internal static readonly string[] StatusNames = ["unprotected", "ok", "out_of_rpo", "never"];

    /// <summary>VMs present in the fleet index, by their overall compliance status; tags fleet, status (ok|out_of_rpo|never|unprotected).</summary>
    public static readonly ObservableGauge<long> Vms = Telemetry.Meter.CreateObservableGauge(
        VmsName,
        ObserveVms,
        "{vm}",
        "VMs by compliance status");

    /// <summary>VMs present that a policy selects, by their status under that policy; tags fleet, policy, status (ok|out_of_rpo|never).</summary>
    public static readonly ObservableGauge<long> PolicyVms = Telemetry.Meter.CreateObservableGauge(
        PolicyVmsName,
        ObservePolicyVms,
        "{vm}",
        "VMs a policy selects, by compliance status under it");

    private static readonly ConcurrentDictionary<string, Snapshot> Snapshots = new(StringComparer.Ordinal);

    /// <summary>One computation of compliance: counts by status, overall and per policy, and when it was published.</summary>
    internal sealed record Snapshot(object Owner, long PublishedAt, long[] ByStatus, IReadOnlyList<(string Policy, long[] ByStatus)> Policies);

    /// <summary>Publishes the compliance the fleet grain just computed (VMs no longer present are not counted).</summary>
    internal static void Publish(object owner, string fleet, IEnumerable<string> policies, IReadOnlyList<VmCompliance> vms)
    {
        var counts = ComplianceCounts.Empty(policies);
        foreach (var vm in vms)
        {
            counts.Count(vm);
        }

        Publish(owner, fleet, counts);
    }

    /// <summary>Publishes counts the fleet grain just summed from the hosts' index shards.</summary>
    internal static void Publish(object owner, string fleet, ComplianceCounts counts)
    {
        ArgumentNullException.ThrowIfNull(counts);
        Snapshots[fleet] = new Snapshot(
            owner,
            Stopwatch.GetTimestamp(),
            [.. counts.ByStatus],
            [.. counts.ByPolicy.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => (p.Key, p.Value.ToArray()))]);
    }

    /// <summary>The fleet grain's activation is going away: its silo stops reporting (unless another activation published since).</summary>
    internal static void Withdraw(object owner, string fleet)
    {
        if (Snapshots.TryGetValue(fleet, out var snapshot) && ReferenceEquals(snapshot.Owner, owner))
        {
            Snapshots.TryRemove(KeyValuePair.Create(fleet, snapshot));
        }
    }

    private static IEnumerable<(string Fleet, Snapshot Snapshot)> Current()
    {
        foreach (var (fleet, snapshot) in Snapshots)
        {
            if (Stopwatch.GetElapsedTime(snapshot.PublishedAt) <= StaleAfter)
            {
                yield return (fleet, snapshot);
            }
        }
    }

    private static IEnumerable<Measurement<long>> ObserveVms()
    {
        foreach (var (fleet, snapshot) in Current())
        {
            for (var status = 0; status < StatusNames.Length; status++)
            {
                yield return new Measurement<long>(snapshot.ByStatus[status], new KeyValuePair<string, object?>("fleet", fleet), new KeyValuePair<string, object?>("status", StatusNames[status]));
            }
        }
    }

    private static IEnumerable<Measurement<long>> ObservePolicyVms()
    {
        foreach (var (fleet, snapshot) in Current())
        {
            foreach (var (policy, counts) in snapshot.Policies)
            {
                // A policy's own status is never "unprotected".
                for (var status = (int)ComplianceStatus.Ok; status < StatusNames.Length; status++)
                {
                    yield return new Measurement<long>(
                        counts[status],
                        new KeyValuePair<string, object?>("fleet", fleet),
                        new KeyValuePair<string, object?>("policy", policy),
                        new KeyValuePair<string, object?>("status", StatusNames[status]));
                }
            }
        }
    }
}
