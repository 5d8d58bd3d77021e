using System.Diagnostics;
using System.Diagnostics.Metrics;
using Orchestrator.Grains.Backups;

namespace Orchestrator.Grains;

/// <summary>
/// The activity source and meter of the orchestrator's own spans and metrics, and the live-backup instruments.
/// Checkpoint, policy and compliance instruments live beside their grains (CheckpointMetrics, PolicyMetrics,
/// ComplianceMetrics) on the same meter. Attribute values are short, lower-case and bounded; the README lists every
/// instrument with its attributes and the Prometheus name it gets.
/// </summary>
public static class Telemetry
{
    public const string Name = "Orchestrator";

    public const string BackupsName = "orchestrator.backups";
    public const string BackupDurationName = "orchestrator.backup.duration";
    public const string BytesCopiedName = "orchestrator.backup.bytes_copied";
    public const string ActiveBackupsName = "orchestrator.backups.active";
    public const string OverlaysAliveName = "orchestrator.overlays.alive";

    public static readonly ActivitySource Source = new(Name, typeof(Telemetry).Assembly.GetName().Version?.ToString());

    public static readonly Meter Meter = new(Name, typeof(Telemetry).Assembly.GetName().Version?.ToString());

    /// <summary>Finished live-backup runs; tags host, vm, outcome (completed|failed).</summary>
    public static readonly Counter<long> Backups = Meter.CreateCounter<long>(BackupsName, "{backup}", "Finished live-backup runs, by outcome");

    /// <summary>Admission to end of a live-backup run, from its persisted times (a resumed run counts its downtime); tags host, outcome.</summary>
    public static readonly Histogram<double> BackupDuration = Meter.CreateHistogram(
        BackupDurationName,
        "s",
        "Live-backup run duration",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400] });

    /// <summary>Bytes copied to backup targets; tags host, vm.</summary>
    public static readonly Counter<long> BytesCopied = Meter.CreateCounter<long>(BytesCopiedName, "By", "Bytes copied to backup targets");

    /// <summary>Live-backup workflows this silo's VM grains hold unfinished now; tag host.</summary>
    public static readonly ObservableUpDownCounter<long> ActiveBackups = Meter.CreateObservableUpDownCounter(
        ActiveBackupsName,
        BackupGauges.ObserveActive,
        "{backup}",
        "Live-backup workflows running");

    /// <summary>Orchestrator overlays in VM disk chains now (0 at rest); tag host.</summary>
    public static readonly ObservableUpDownCounter<long> OverlaysAlive = Meter.CreateObservableUpDownCounter(
        OverlaysAliveName,
        BackupGauges.ObserveOverlays,
        "{overlay}",
        "Backup overlays in VM chains now");

    /// <summary>Records a live backup that ended (counter and duration).</summary>
    internal static void RecordBackupEnded(string host, string vm, BackupRunState run)
    {
        var outcome = run.Step == BackupStep.Completed ? "completed" : "failed";
        Backups.Add(1, new TagList { { "host", host }, { "vm", vm }, { "outcome", outcome } });
        if (run.EndedAt is { } ended)
        {
            BackupDuration.Record(Math.Max(0, (ended - run.StartedAt).TotalSeconds), new TagList { { "host", host }, { "outcome", outcome } });
        }
    }
}
