using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace Orchestrator.Grains.Checkpoints;

/// <summary>Metrics of internal checkpoints, on the <see cref="Telemetry.Meter"/> ("Orchestrator").</summary>
public static class CheckpointMetrics
{
    public const string TakenName = "orchestrator.checkpoints.taken";
    public const string PauseName = "orchestrator.checkpoint.pause";
    public const string FailuresName = "orchestrator.checkpoint.failures";
    public const string DurationName = "orchestrator.checkpoint.duration";

    /// <summary>Checkpoints taken; tags host, vm, origin (manual|schedule|policy), with_memory.</summary>
    public static readonly Counter<long> Taken = Telemetry.Meter.CreateCounter<long>(TakenName, "{checkpoint}", "Internal checkpoints taken");

    /// <summary>How long the VM was paused per checkpoint of a running VM; tags host, source (events|call_duration).</summary>
    public static readonly Histogram<double> Pause = Telemetry.Meter.CreateHistogram<double>(
        PauseName,
        "ms",
        "VM pause per checkpoint",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [10, 25, 50, 100, 150, 200, 300, 400, 500, 750, 1000, 2000, 5000] });

    /// <summary>Failed or refused operations; tags host, vm, operation (create|revert|delete|schedule|prune), reason (an error reason or code: bounded).</summary>
    public static readonly Counter<long> Failures = Telemetry.Meter.CreateCounter<long>(FailuresName, "{failure}", "Checkpoint operations that failed or were refused");

    /// <summary>Duration of each operation; tags host, operation.</summary>
    public static readonly Histogram<double> Duration = Telemetry.Meter.CreateHistogram<double>(DurationName, "ms", "Checkpoint operation duration");

    public static void RecordFailure(string host, string vm, string operation, string reason) =>
        Failures.Add(1, new TagList { { "host", host }, { "vm", vm }, { "operation", operation }, { "reason", reason } });
}
