using System.Collections.Concurrent;
using Orchestrator.Grains.Storage;
using Orleans.Storage;

namespace Orchestrator.UnitTests.Fleet;

/// <summary>
/// Grain storage for the fleet index tests: rows are the real MessagePack bytes (as in PostgreSQL), kept in this
/// process for every silo of the cluster (so a stopped silo loses nothing, unlike Orleans' memory storage, whose
/// storage grains live on the silos), with ETag checks and a count of writes per row.
/// </summary>
public sealed class CountingGrainStorage : IGrainStorage
{
    private readonly MessagePackGrainStorageSerializer _serializer = new();
    private readonly ConcurrentDictionary<(string State, GrainId Grain), (byte[] Bytes, long Version)> _rows = new();
    private readonly ConcurrentDictionary<(string State, GrainId Grain), int> _writes = new();

    /// <summary>Writes of one row since the start (or the last <see cref="ResetCounts"/>).</summary>
    public int Writes(string state, GrainId grain) => _writes.TryGetValue((state, grain), out var n) ? n : 0;

    public void ResetCounts() => _writes.Clear();

    /// <summary>Stores raw bytes as a row, as an earlier version of the code left it.</summary>
    public void Put(string state, GrainId grain, byte[] bytes) => _rows[(state, grain)] = (bytes, 1);

    /// <summary>A row as stored, read back with the real serializer (null when absent).</summary>
    public T? Read<T>(string state, GrainId grain) =>
        _rows.TryGetValue((state, grain), out var row) ? _serializer.Deserialize<T>(new BinaryData(row.Bytes)) : default;

    public Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        if (_rows.TryGetValue((stateName, grainId), out var row))
        {
            grainState.State = _serializer.Deserialize<T>(new BinaryData(row.Bytes));
            grainState.ETag = row.Version.ToString(System.Globalization.CultureInfo.InvariantCulture);
            grainState.RecordExists = true;
        }

        return Task.CompletedTask;
    }

    public Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        var key = (stateName, grainId);
        var bytes = _serializer.Serialize(grainState.State).ToArray();
        lock (_rows)
        {
            var stored = _rows.TryGetValue(key, out var row) ? row.Version.ToString(System.Globalization.CultureInfo.InvariantCulture) : null;
            if (stored != grainState.ETag)
            {
                throw new InconsistentStateException($"ETag mismatch on {stateName} of {grainId}", stored, grainState.ETag);
            }

            var version = (row.Version) + 1;
            _rows[key] = (bytes, version);
            grainState.ETag = version.ToString(System.Globalization.CultureInfo.InvariantCulture);
            grainState.RecordExists = true;
        }

        _writes.AddOrUpdate(key, 1, (_, n) => n + 1);
        return Task.CompletedTask;
    }

    public Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        _rows.TryRemove((stateName, grainId), out _);
        grainState.ETag = null;
        grainState.RecordExists = false;
        return Task.CompletedTask;
    }
}
