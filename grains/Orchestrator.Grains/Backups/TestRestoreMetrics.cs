using System.Diagnostics;
using System.Diagnostics.Metrics;
using Orchestrator.Grains.VirtualMachines;

namespace Orchestrator.Grains.Backups;

/// <summary>Test-restore instruments (on the orchestrator's meter).</summary>
public static class TestRestoreMetrics
{
    public const string TestsName = "orchestrator.backup.tests";
    public const string BootDurationName = "orchestrator.backup.test.boot_duration";

    /// <summary>Finished test restores; tags host, vm, outcome (passed|failed). Prometheus: orchestrator_backup_tests_total.</summary>
    public static readonly Counter<long> Tests = Telemetry.Meter.CreateCounter<long>(TestsName, "{test}", "Finished test restores, by outcome");

    /// <summary>Start of the throwaway VM to the probe's answer, for passed tests; tag host, probe.</summary>
    public static readonly Histogram<double> BootDuration = Telemetry.Meter.CreateHistogram(
        BootDurationName,
        "s",
        "Test restore: time from starting the restored VM to the probe's answer",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [1, 2, 5, 10, 20, 30, 60, 120, 300, 600] });

    internal static void Record(string host, string vm, TestRestoreRecord record)
    {
        var passed = record.Outcome == TestRestoreOutcome.Passed;
        Tests.Add(1, new TagList { { "host", host }, { "vm", vm }, { "outcome", passed ? "passed" : "failed" } });
        if (passed)
        {
            BootDuration.Record(record.BootSeconds, new TagList { { "host", host }, { "probe", record.Probe.Split(':')[0] } });
        }
    }
}
