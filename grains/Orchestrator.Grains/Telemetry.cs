using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace Orchestrator.Grains;

/// <summary>The activity source and meter of the orchestrator's own spans and metrics.</summary>
public static class Telemetry
{
    public const string Name = "Orchestrator";

    public static readonly ActivitySource Source = new(Name, typeof(Telemetry).Assembly.GetName().Version?.ToString());

    public static readonly Meter Meter = new(Name, typeof(Telemetry).Assembly.GetName().Version?.ToString());

    public static readonly Counter<long> Backups = Meter.CreateCounter<long>("orchestrator.backups", description: "Finished live-backup runs, by outcome");

    public static readonly Histogram<double> BackupDuration = Meter.CreateHistogram<double>("orchestrator.backup.duration", "s", "Live-backup run duration");

    public static readonly Counter<long> BytesCopied = Meter.CreateCounter<long>("orchestrator.backup.bytes_copied", "By", "Bytes copied to backup targets");

    public static readonly UpDownCounter<long> ActiveBackups = Meter.CreateUpDownCounter<long>("orchestrator.backups.active", description: "Live-backup workflows running");

    public static readonly UpDownCounter<long> OverlaysAlive = Meter.CreateUpDownCounter<long>("orchestrator.overlays.alive", description: "Backup overlays in VM chains now");
}
