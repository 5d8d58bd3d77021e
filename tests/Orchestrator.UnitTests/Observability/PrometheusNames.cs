using System.Diagnostics.Metrics;
using System.Text.RegularExpressions;

namespace Orchestrator.UnitTests.Observability;

/// <summary>
/// The names an instrument gets in Prometheus when its OTLP metrics go through an OpenTelemetry Collector's
/// prometheus (or prometheusremotewrite) exporter with its default suffixes, or into Prometheus's own OTLP receiver
/// (translation strategy UnderscoreEscapingWithSuffixes); the rule deploy/grafana/README.md documents:
/// <list type="number">
/// <item>split the name into words at every character outside <c>[a-zA-Z0-9:]</c> (dots and underscores alike);</item>
/// <item>append the unit's word unless the name has it already: s→seconds, ms→milliseconds, By→bytes, and the other
/// UCUM units of the translator; a unit in braces (<c>{vm}</c>) or <c>1</c> adds nothing; <c>A/B</c> adds A's word and
/// <c>per_</c> B's;</item>
/// <item>a monotonic sum (Counter, ObservableCounter) gets <c>total</c> last; a gauge in unit <c>1</c> gets <c>ratio</c>;</item>
/// <item>join with underscores. A histogram is exposed as NAME_bucket, NAME_sum and NAME_count.</item>
/// </list>
/// </summary>
public static partial class PrometheusNames
{
    private static readonly Dictionary<string, string> Units = new(StringComparer.Ordinal)
    {
        ["d"] = "days",
        ["h"] = "hours",
        ["min"] = "minutes",
        ["s"] = "seconds",
        ["ms"] = "milliseconds",
        ["us"] = "microseconds",
        ["ns"] = "nanoseconds",
        ["By"] = "bytes",
        ["KiBy"] = "kibibytes",
        ["MiBy"] = "mebibytes",
        ["GiBy"] = "gibibytes",
        ["KBy"] = "kilobytes",
        ["MBy"] = "megabytes",
        ["GBy"] = "gigabytes",
        ["m"] = "meters",
        ["V"] = "volts",
        ["A"] = "amperes",
        ["J"] = "joules",
        ["W"] = "watts",
        ["g"] = "grams",
        ["Cel"] = "celsius",
        ["Hz"] = "hertz",
        ["1"] = "",
        ["%"] = "percent",
    };

    private static readonly Dictionary<string, string> PerUnits = new(StringComparer.Ordinal)
    {
        ["s"] = "second",
        ["m"] = "minute",
        ["h"] = "hour",
        ["d"] = "day",
        ["w"] = "week",
        ["mo"] = "month",
        ["y"] = "year",
    };

    public enum Kind
    {
        Counter,
        Gauge,
        Histogram,
    }

    /// <summary>How OTLP carries an instrument: Counter/ObservableCounter as a monotonic sum, histograms as histograms, the rest as gauges in Prometheus.</summary>
    public static Kind KindOf(Instrument instrument)
    {
        var definition = instrument.GetType().IsGenericType ? instrument.GetType().GetGenericTypeDefinition() : instrument.GetType();
        return definition == typeof(Counter<>) || definition == typeof(ObservableCounter<>) ? Kind.Counter
            : definition == typeof(Histogram<>) ? Kind.Histogram
            : Kind.Gauge;
    }

    /// <summary>The metric name (for a histogram, the base of its _bucket/_sum/_count series).</summary>
    public static string Of(string name, string? unit, Kind kind)
    {
        var words = Words().Split(name).Where(w => w.Length > 0).ToList();
        var parts = (unit ?? "").Split('/', 2);
        var main = parts[0].Trim();
        if (main.Length > 0 && !main.Contains('{', StringComparison.Ordinal) && !main.Contains('}', StringComparison.Ordinal))
        {
            var word = Clean(Units.GetValueOrDefault(main, main));
            if (word.Length > 0 && !words.Contains(word))
            {
                words.Add(word);
            }
        }

        if (parts.Length > 1 && parts[1].Trim() is { Length: > 0 } per && !per.Contains('{', StringComparison.Ordinal) && !per.Contains('}', StringComparison.Ordinal))
        {
            var word = "per_" + Clean(PerUnits.GetValueOrDefault(per, per));
            if (!words.Contains(word))
            {
                words.Add(word);
            }
        }

        if (kind == Kind.Counter)
        {
            words.RemoveAll(w => w == "total");
            words.Add("total");
        }
        else if (kind == Kind.Gauge && unit == "1")
        {
            words.RemoveAll(w => w == "ratio");
            words.Add("ratio");
        }

        var joined = string.Join('_', words);
        return joined.Length > 0 && char.IsAsciiDigit(joined[0]) ? "_" + joined : joined;
    }

    /// <summary>Every series name the instrument appears under in Prometheus.</summary>
    public static IEnumerable<string> SeriesOf(Instrument instrument)
    {
        var kind = KindOf(instrument);
        var name = Of(instrument.Name, instrument.Unit, kind);
        return kind == Kind.Histogram ? [name + "_bucket", name + "_sum", name + "_count"] : [name];
    }

    private static string Clean(string unit) => Invalid().Replace(unit, "_").Trim('_');

    [GeneratedRegex("[^a-zA-Z0-9:]")]
    private static partial Regex Words();

    [GeneratedRegex("[^a-zA-Z0-9:]+")]
    private static partial Regex Invalid();
}
