using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Orchestrator.Grains;
using Orchestrator.Grains.Storage;
using Orchestrator.UnitTests.Cluster;
using Orleans.Storage;

namespace Orchestrator.UnitTests.State;

/// <summary>Writes per grain state (state name and grain id), with the bytes each would take in MessagePack.</summary>
public sealed class StateWriteCounter
{
    private static readonly MessagePackGrainStorageSerializer Serializer = new();
    private readonly ConcurrentDictionary<(string State, GrainId Grain), Tally> _tallies = new();

    public sealed class Tally
    {
        private long _writes;
        private long _bytes;
        private long _largest;

        public long Writes => Interlocked.Read(ref _writes);

        public long Bytes => Interlocked.Read(ref _bytes);

        public long Largest => Interlocked.Read(ref _largest);

        internal void Add(long bytes)
        {
            Interlocked.Increment(ref _writes);
            Interlocked.Add(ref _bytes, bytes);
            long seen;
            while (bytes > (seen = Interlocked.Read(ref _largest)) && Interlocked.CompareExchange(ref _largest, bytes, seen) != seen)
            {
            }
        }
    }

    private readonly ConcurrentDictionary<GrainId, List<string>> _order = new();

    public void Record<T>(string state, GrainId grain, T value)
    {
        _tallies.GetOrAdd((state, grain), _ => new Tally()).Add(Serializer.Serialize(value).ToMemory().Length);
        var order = _order.GetOrAdd(grain, _ => []);
        lock (order)
        {
            order.Add(state);
        }
    }

    /// <summary>The state names of one grain's writes, in the order they were made.</summary>
    public List<string> Order(GrainId grain)
    {
        var order = _order.GetOrAdd(grain, _ => []);
        lock (order)
        {
            return [.. order];
        }
    }

    /// <summary>The writes of one state of one grain so far (a zero tally when there were none).</summary>
    public Tally Of(string state, GrainId grain) => _tallies.TryGetValue((state, grain), out var tally) ? tally : new Tally();

    /// <summary>Every state of every grain whose id contains <paramref name="keyPart"/>.</summary>
    public IReadOnlyDictionary<string, Tally> Matching(string keyPart) =>
        _tallies.Where(t => t.Key.Grain.ToString().Contains(keyPart, StringComparison.Ordinal))
            .ToDictionary(t => $"{t.Key.State} {t.Key.Grain}", t => t.Value);
}

/// <summary>Memory storage that counts every write (the silo's storage lifecycle is the inner storage's own).</summary>
internal sealed class CountingGrainStorage(IGrainStorage inner, StateWriteCounter counter) : IGrainStorage, ILifecycleParticipant<ISiloLifecycle>
{
    public Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) => inner.ReadStateAsync(stateName, grainId, grainState);

    public Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        counter.Record(stateName, grainId, grainState.State);
        return inner.WriteStateAsync(stateName, grainId, grainState);
    }

    public Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) => inner.ClearStateAsync(stateName, grainId, grainState);

    public void Participate(ISiloLifecycle lifecycle)
    {
    }
}

/// <summary>The three-host cluster whose grain storage counts writes per grain state.</summary>
public sealed class WriteCountingClusterFixture : ThreeHostClusterFixture
{
    private const string Inner = "counted-memory";

    public StateWriteCounter Writes { get; } = new();

    public IGrainStorage StorageOf(string host) => SiloOf(host).ServiceProvider.GetRequiredKeyedService<IGrainStorage>(StorageNames.Default);

    protected override void ConfigureSilo(ISiloBuilder silo)
    {
        silo.AddMemoryGrainStorage(Inner);
        silo.Services.AddKeyedSingleton<IGrainStorage>(
            StorageNames.Default,
            (sp, _) => new CountingGrainStorage(sp.GetRequiredKeyedService<IGrainStorage>(Inner), Writes));
    }
}

/// <summary>Runs alone (after the parallel collections): its heap-footprint test reads the process's heap, which other tests move.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class WriteCountingClusterCollection : ICollectionFixture<WriteCountingClusterFixture>
{
    public const string Name = "write-counting cluster";
}
