using System.Collections.Concurrent;
using System.Diagnostics.Metrics;

namespace Orchestrator.Grains.Backups;

/// <summary>
/// What <see cref="Telemetry.ActiveBackups"/> and <see cref="Telemetry.OverlaysAlive"/> report: each VM grain
/// activation of this silo publishes its unfinished live backup here whenever the run's persisted state changes, and
/// the observable instruments sum it per host when the exporter asks. Derived from state rather than +1/-1 deltas on
/// purpose: a silo restarted mid-backup resumes the run without the +1 of the process that started it, and a delta
/// counter would end below zero (or, after a crash, stay above it) for good.
/// </summary>
internal static class BackupGauges
{
    private static readonly ConcurrentDictionary<object, Entry> Unfinished = new(ReferenceEqualityComparer.Instance);

    // Every host a VM grain of this process has published for: its series stays (at 0) rather than vanishing at rest.
    private static readonly ConcurrentDictionary<string, byte> KnownHosts = new(StringComparer.Ordinal);

    private readonly record struct Entry(string Host, bool Active, int Overlays);

    /// <summary>
    /// Publishes the run a VM grain activation holds (null or finished: it holds none), and the overlays its disks
    /// still run on without a run (a run that gave up on its commit leaves the overlay in place: it stays counted).
    /// </summary>
    public static void Track(object owner, string host, BackupRunState? run, int overlaysLeft = 0)
    {
        var active = run is { IsTerminal: false };
        if (!active && overlaysLeft == 0)
        {
            Unfinished.TryRemove(owner, out _);
            KnownHosts.TryAdd(host, 0);
            return;
        }

        // Called at every persisted step: write only when the numbers change.
        var entry = new Entry(host, active, active ? OverlaysOf(run!) : overlaysLeft);
        if (!Unfinished.TryGetValue(owner, out var current) || current != entry)
        {
            KnownHosts.TryAdd(host, 0);
            Unfinished[owner] = entry;
        }
    }

    /// <summary>The activation is going away (its run, if any, is resumed by the next one, which publishes it again).</summary>
    public static void Forget(object owner) => Unfinished.TryRemove(owner, out _);

    /// <summary>
    /// Overlays of the run in the VM's chains: from the step whose intent says they exist until each disk is committed
    /// back (a run rolling back from a half-done snapshot goes to Committing and counts its disks until committed).
    /// </summary>
    internal static int OverlaysOf(BackupRunState run)
    {
        if (run.Method is BackupMethod.Offline or BackupMethod.BackupJob || run.Step is not (BackupStep.OverlayActive or BackupStep.Copying or BackupStep.Committing or BackupStep.Cleaning))
        {
            return 0; // an offline copy or a backup job never puts an overlay in the chain
        }

        var alive = 0;
        foreach (var disk in run.Disks)
        {
            alive += disk.Committed ? 0 : 1;
        }

        return alive;
    }

    internal static IEnumerable<Measurement<long>> ObserveActive() => PerHost(e => e.Active ? 1 : 0);

    internal static IEnumerable<Measurement<long>> ObserveOverlays() => PerHost(e => e.Overlays);

    private static IEnumerable<Measurement<long>> PerHost(Func<Entry, long> value)
    {
        foreach (var host in KnownHosts.Keys)
        {
            long sum = 0;
            foreach (var entry in Unfinished.Values)
            {
                if (entry.Host == host)
                {
                    sum += value(entry);
                }
            }

            yield return new Measurement<long>(sum, new KeyValuePair<string, object?>("host", host));
        }
    }
}
