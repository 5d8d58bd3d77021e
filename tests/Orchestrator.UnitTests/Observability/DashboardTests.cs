using System.Diagnostics.Metrics;
using System.Reflection;
using System.Text.Json;
using System.Text.RegularExpressions;
using Orchestrator.Grains;

namespace Orchestrator.UnitTests.Observability;

/// <summary>
/// deploy/grafana/orchestrator-dashboard.json against the code: every metric a panel or variable queries is the
/// Prometheus name (by the rule in <see cref="PrometheusNames"/>) of an instrument the grains create, so renaming an
/// instrument, changing its unit or its kind breaks this test; and the README's metrics table lists every instrument.
/// </summary>
public sealed partial class DashboardTests
{
    /// <summary>Instruments the dashboard leaves out on purpose (the README still lists them).</summary>
    private static readonly string[] NotOnTheDashboard = ["orchestrator.checkpoint.duration"];

    private static string OutputFile(string name) => Path.Combine(AppContext.BaseDirectory, "observability", name);

    /// <summary>Every instrument on the "Orchestrator" meter: the static instrument fields of the grains assembly, read
    /// (which runs the static constructors that create them), plus whatever a listener is told the meter holds.</summary>
    private static IReadOnlyList<Instrument> Instruments()
    {
        var fromFields = typeof(Telemetry).Assembly.GetTypes()
            .Where(t => !t.ContainsGenericParameters)
            .SelectMany(t => t.GetFields(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static))
            .Where(f => typeof(Instrument).IsAssignableFrom(f.FieldType))
            .Select(f => (Instrument)f.GetValue(null)!)
            .ToList();
        var published = new List<Instrument>();
        using (var listener = new MeterListener())
        {
            listener.InstrumentPublished = (instrument, _) =>
            {
                if (instrument.Meter.Name == Telemetry.Name)
                {
                    lock (published)
                    {
                        published.Add(instrument);
                    }
                }
            };
            listener.Start();
        }

        Assert.All(fromFields, i => Assert.Equal(Telemetry.Name, i.Meter.Name));
        return [.. fromFields.Concat(published).DistinctBy(i => i.Name).OrderBy(i => i.Name, StringComparer.Ordinal)];
    }

    /// <summary>Every string in the dashboard (expressions, variable queries, texts), panels inside rows included.</summary>
    private static List<(string Path, string Value)> Strings(JsonElement element, string path = "$")
    {
        var found = new List<(string, string)>();
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
                foreach (var property in element.EnumerateObject())
                {
                    found.AddRange(Strings(property.Value, $"{path}.{property.Name}"));
                }

                break;
            case JsonValueKind.Array:
                var i = 0;
                foreach (var item in element.EnumerateArray())
                {
                    found.AddRange(Strings(item, $"{path}[{i++}]"));
                }

                break;
            case JsonValueKind.String:
                found.Add((path, element.GetString()!));
                break;
        }

        return found;
    }

    private static JsonDocument Dashboard() => JsonDocument.Parse(File.ReadAllText(OutputFile("orchestrator-dashboard.json")));

    [GeneratedRegex("orchestrator_[a-zA-Z0-9_:]*")]
    private static partial Regex MetricName();

    [Theory]
    [InlineData("http.server.request.duration", "s", PrometheusNames.Kind.Histogram, "http_server_request_duration_seconds")]
    [InlineData("memory.usage", "By", PrometheusNames.Kind.Gauge, "memory_usage_bytes")]
    [InlineData("requests.count", "1", PrometheusNames.Kind.Counter, "requests_count_total")]
    [InlineData("cpu.utilization", "1", PrometheusNames.Kind.Gauge, "cpu_utilization_ratio")]
    [InlineData("network.io", "By/s", PrometheusNames.Kind.Gauge, "network_io_bytes_per_second")]
    [InlineData("orchestrator.backup.bytes_copied", "By", PrometheusNames.Kind.Counter, "orchestrator_backup_bytes_copied_total")]
    [InlineData("orchestrator.checkpoint.pause", "ms", PrometheusNames.Kind.Histogram, "orchestrator_checkpoint_pause_milliseconds")]
    [InlineData("orchestrator.compliance.vms", "{vm}", PrometheusNames.Kind.Gauge, "orchestrator_compliance_vms")]
    [InlineData("jobs.total", "{job}", PrometheusNames.Kind.Counter, "jobs_total")]
    [InlineData("queue..depth", null, PrometheusNames.Kind.Gauge, "queue_depth")]
    public void PrometheusName_ByTheDocumentedRule(string name, string? unit, PrometheusNames.Kind kind, string expected) =>
        Assert.Equal(expected, PrometheusNames.Of(name, unit, kind));

    [Fact]
    public void Instruments_KindsAsOtlpCarriesThem()
    {
        var kinds = Instruments().ToDictionary(i => i.Name, PrometheusNames.KindOf);

        Assert.Equal(PrometheusNames.Kind.Counter, kinds[Telemetry.BackupsName]);
        Assert.Equal(PrometheusNames.Kind.Histogram, kinds[Telemetry.BackupDurationName]);
        Assert.Equal(PrometheusNames.Kind.Gauge, kinds[Telemetry.OverlaysAliveName]);
        Assert.Equal(PrometheusNames.Kind.Gauge, kinds[Grains.Fleet.ComplianceMetrics.VmsName]);
        Assert.Equal(PrometheusNames.Kind.Counter, kinds[Grains.Policies.PolicyMetrics.TargetsName]);
    }

    [Fact]
    public void Dashboard_EveryMetricItQueries_IsTheNameOfAnInstrumentTheCodeCreates()
    {
        var series = Instruments().SelectMany(i => PrometheusNames.SeriesOf(i).Select(s => (Series: s, Instrument: i.Name))).ToList();
        var known = series.Select(s => s.Series).ToHashSet(StringComparer.Ordinal);
        using var dashboard = Dashboard();
        var strings = Strings(dashboard.RootElement);

        var used = strings.SelectMany(s => MetricName().Matches(s.Value).Select(m => (s.Path, Name: m.Value))).ToList();
        var unknown = used.Where(u => !known.Contains(u.Name)).Select(u => $"{u.Name} (at {u.Path})").Distinct().ToList();

        Assert.True(unknown.Count == 0, $"the dashboard queries metrics no instrument produces: {string.Join("; ", unknown)}. Known: {string.Join(", ", known.Order(StringComparer.Ordinal))}");
        var exprs = strings.Where(s => s.Path.EndsWith(".expr", StringComparison.Ordinal)).ToList();
        Assert.True(exprs.Count >= 20, $"only {exprs.Count} panel expressions found");
        Assert.All(exprs, e => Assert.True(MetricName().IsMatch(e.Value), $"{e.Path} queries no orchestrator metric: {e.Value}"));

        // Every instrument is on the dashboard, except those left off on purpose.
        var shown = used.Select(u => u.Name).ToHashSet(StringComparer.Ordinal);
        var missing = Instruments().Select(i => i.Name)
            .Where(name => !NotOnTheDashboard.Contains(name) && !series.Any(s => s.Instrument == name && shown.Contains(s.Series)))
            .ToList();
        Assert.True(missing.Count == 0, $"instruments without a panel: {string.Join(", ", missing)}");
    }

    [Fact]
    public void Dashboard_ImportsAnywhere_DataSourcesAreVariablesAndPanelIdsUnique()
    {
        using var dashboard = Dashboard();
        var root = dashboard.RootElement;
        var variables = root.GetProperty("templating").GetProperty("list").EnumerateArray().ToDictionary(v => v.GetProperty("name").GetString()!);
        var panels = root.GetProperty("panels").EnumerateArray()
            .SelectMany(p => p.TryGetProperty("panels", out var inner) ? inner.EnumerateArray().Prepend(p) : [p])
            .ToList();

        Assert.True(root.GetProperty("schemaVersion").GetInt32() >= 39);
        Assert.Equal(("datasource", "prometheus"), (variables["DS_PROMETHEUS"].GetProperty("type").GetString(), variables["DS_PROMETHEUS"].GetProperty("query").GetString()));
        Assert.Equal("datasource", variables["DS_TRACES"].GetProperty("type").GetString());
        Assert.Equal(panels.Count, panels.Select(p => p.GetProperty("id").GetInt32()).Distinct().Count());
        foreach (var panel in panels.Where(p => p.TryGetProperty("targets", out _)))
        {
            var title = panel.GetProperty("title").GetString();
            var uids = panel.GetProperty("targets").EnumerateArray().Select(t => t.GetProperty("datasource").GetProperty("uid").GetString())
                .Append(panel.GetProperty("datasource").GetProperty("uid").GetString())
                .Distinct()
                .ToList();
            var uid = Assert.Single(uids);
            Assert.True(uid is "${DS_PROMETHEUS}" or "${DS_TRACES}", $"panel '{title}' names data source '{uid}' instead of a variable");
            Assert.True(panel.TryGetProperty("gridPos", out _), $"panel '{title}' has no position");
        }
    }

    [Fact]
    public void Readme_MetricsTable_ListsEveryInstrumentWithItsPrometheusName()
    {
        var readme = File.ReadAllText(OutputFile("README.md"));
        var rows = readme.Split('\n').Where(l => l.StartsWith("| `orchestrator.", StringComparison.Ordinal)).ToList();

        foreach (var instrument in Instruments())
        {
            var row = rows.SingleOrDefault(r => r.StartsWith($"| `{instrument.Name}` |", StringComparison.Ordinal));
            Assert.True(row is not null, $"the README's metrics table has no row for {instrument.Name}");
            var name = PrometheusNames.Of(instrument.Name, instrument.Unit, PrometheusNames.KindOf(instrument));
            Assert.Contains($"`{name}", row, StringComparison.Ordinal);
        }
    }
}
