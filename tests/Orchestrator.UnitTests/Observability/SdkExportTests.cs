using System.Diagnostics.Metrics;
using System.Reflection;
using Microsoft.Extensions.Options;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using Orchestrator.Grains;
using Orchestrator.Grains.Backups;
using Orchestrator.Grains.Fleet;
using Orchestrator.Grains.Policies;

namespace Orchestrator.UnitTests.Observability;

/// <summary>
/// Every instrument through the OpenTelemetry SDK the silo uses (its meter added as the silo adds it): the kind and unit
/// OTLP carries for it are the ones the Prometheus name rule (<see cref="PrometheusNames"/>) assumes, and the bucket
/// advice is honoured. One measurement on each synchronous instrument and one entry in each gauge registry, all under
/// names no other test uses.
/// </summary>
public sealed class SdkExportTests
{
    private sealed class CollectingExporter : BaseExporter<Metric>
    {
        public Dictionary<string, (MetricType Type, string Unit, double[] Bounds)> Exported { get; } = new(StringComparer.Ordinal);

        public override ExportResult Export(in Batch<Metric> batch)
        {
            foreach (var metric in batch)
            {
                var bounds = new List<double>();
                foreach (ref readonly var point in metric.GetMetricPoints())
                {
                    if (metric.MetricType == MetricType.Histogram && bounds.Count == 0)
                    {
                        foreach (var bucket in point.GetHistogramBuckets())
                        {
                            bounds.Add(bucket.ExplicitBound);
                        }
                    }
                }

                Exported[metric.Name] = (metric.MetricType, metric.Unit, [.. bounds]);
            }

            return ExportResult.Success;
        }
    }

    [Fact]
    public void EveryInstrument_ExportedByTheSdk_WithTheKindAndUnitTheNameRuleAssumes()
    {
        var exporter = new CollectingExporter();
        using var provider = Sdk.CreateMeterProviderBuilder()
            .AddMeter(Telemetry.Name)
            .AddReader(new BaseExportingMetricReader(exporter))
            .Build();
        var instruments = typeof(Telemetry).Assembly.GetTypes()
            .Where(t => !t.ContainsGenericParameters)
            .SelectMany(t => t.GetFields(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static))
            .Where(f => typeof(Instrument).IsAssignableFrom(f.FieldType))
            .Select(f => (Instrument)f.GetValue(null)!)
            .ToList();
        var tag = new KeyValuePair<string, object?>("test", "sdk-export");
        foreach (var instrument in instruments.Where(i => !i.IsObservable))
        {
            switch (instrument)
            {
                case Counter<long> counter:
                    counter.Add(1, tag);
                    break;
                case Histogram<double> histogram:
                    histogram.Record(1, tag);
                    break;
                default:
                    Assert.Fail($"{instrument.Name} is a {instrument.GetType().Name}: add it here and to PrometheusNames.KindOf");
                    break;
            }
        }

        object vm = new(), policy = new(), fleet = new();
        var fleetId = $"sdk-export-{Guid.NewGuid():N}";
        BackupGauges.Track(vm, "sdk-export-host", new BackupRunState { Step = BackupStep.Copying, Disks = [new BackupDiskState()] });
        PolicyMetrics.Publish(policy, "sdk-export", new BackupPolicyState
        {
            Exists = true,
            ActiveRun = new PolicyRunRecord { State = PolicyRunState.Running },
            PendingRetries = [new PendingRetryRecord { Host = "sdk-export-host", Vm = "v" }],
        });
        ComplianceMetrics.Publish(fleet, fleetId, ["sdk-export"], []);
        using var slots = new BackupSlots("sdk-export-host", Options.Create(new BackupOptions()), TimeProvider.System);
        try
        {
            Assert.True(provider.ForceFlush());
        }
        finally
        {
            BackupGauges.Forget(vm);
            PolicyMetrics.Forget(policy);
            ComplianceMetrics.Withdraw(fleet, fleetId);
        }

        Assert.True(instruments.Count >= 17, $"only {instruments.Count} instruments found");
        foreach (var instrument in instruments)
        {
            Assert.True(exporter.Exported.TryGetValue(instrument.Name, out var exported), $"{instrument.Name} was not exported");
            var kind = exported.Type switch
            {
                MetricType.LongSum or MetricType.DoubleSum => PrometheusNames.Kind.Counter,
                MetricType.Histogram => PrometheusNames.Kind.Histogram,
                _ => PrometheusNames.Kind.Gauge,
            };
            Assert.Equal((instrument.Name, PrometheusNames.KindOf(instrument)), (instrument.Name, kind));
            Assert.Equal((instrument.Name, instrument.Unit ?? ""), (instrument.Name, exported.Unit ?? ""));
        }

        Assert.Equal([1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, double.PositiveInfinity], exporter.Exported[Telemetry.BackupDurationName].Bounds);
        Assert.Equal(0.1, exporter.Exported[PolicyMetrics.AdmissionWaitName].Bounds[0]);
    }
}
