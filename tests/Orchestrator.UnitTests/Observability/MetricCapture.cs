using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using Orchestrator.Grains;

namespace Orchestrator.UnitTests.Observability;

/// <summary>
/// Captures what the "Orchestrator" meter records: measurements of the synchronous instruments as they happen, and
/// the observable ones on demand (<see cref="Observe"/>). Every cluster of the test process records into the same
/// static instruments, so tests pick their own measurements by attributes (unique policy names, VM names, fleet ids).
/// </summary>
public sealed class MetricCapture : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly List<Recorded> _recorded = [];
    private readonly Lock _observeLock = new();
    private List<Recorded>? _observed;

    public MetricCapture()
    {
        // Instruments are static fields, created when their class is first used: create them all now, so the
        // observable ones report even before any grain touched their class in this process.
        foreach (var type in new[] { typeof(Telemetry), typeof(Grains.Checkpoints.CheckpointMetrics), typeof(Grains.Policies.PolicyMetrics), typeof(Grains.Fleet.ComplianceMetrics) })
        {
            RuntimeHelpers.RunClassConstructor(type.TypeHandle);
        }

        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == Telemetry.Name)
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((i, v, tags, _) => Add(i, v, tags));
        _listener.SetMeasurementEventCallback<int>((i, v, tags, _) => Add(i, v, tags));
        _listener.SetMeasurementEventCallback<double>((i, v, tags, _) => Add(i, v, tags));
        _listener.Start();
    }

    public sealed record Recorded(string Instrument, double Value, IReadOnlyDictionary<string, object?> Tags)
    {
        public string? Tag(string key) => Tags.TryGetValue(key, out var value) ? value?.ToString() : null;
    }

    /// <summary>Measurements of the synchronous instruments so far.</summary>
    public IReadOnlyList<Recorded> Measurements
    {
        get
        {
            lock (_recorded)
            {
                return [.. _recorded];
            }
        }
    }

    /// <summary>Measurements of one synchronous instrument whose tags include every pair given.</summary>
    public IReadOnlyList<Recorded> Of(string instrument, params (string Key, string Value)[] tags) =>
        [.. Measurements.Where(m => m.Instrument == instrument && tags.All(t => m.Tag(t.Key) == t.Value))];

    /// <summary>Asks every observable instrument for its values now.</summary>
    public IReadOnlyList<Recorded> Observe()
    {
        lock (_observeLock)
        {
            _observed = [];
            _listener.RecordObservableInstruments();
            var observed = _observed;
            _observed = null;
            return observed;
        }
    }

    public void Dispose() => _listener.Dispose();

    private void Add(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var dictionary = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var tag in tags)
        {
            dictionary[tag.Key] = tag.Value;
        }

        var recorded = new Recorded(instrument.Name, value, dictionary);
        if (instrument.IsObservable)
        {
            // Only this listener's RecordObservableInstruments (inside Observe, under its lock) reports observables here.
            _observed?.Add(recorded);
            return;
        }

        lock (_recorded)
        {
            _recorded.Add(recorded);
        }
    }
}
