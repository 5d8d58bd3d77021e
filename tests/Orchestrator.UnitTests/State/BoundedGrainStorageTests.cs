using Microsoft.Extensions.Time.Testing;
using Orchestrator.Grains.Storage;
using Orleans.Storage;

namespace Orchestrator.UnitTests.State;

/// <summary>The limiter in front of grain storage: a burst of writes queues in the silo, never more in flight than the pool.</summary>
public sealed class BoundedGrainStorageTests
{
    /// <summary>A storage as slow as asked that counts the calls inside it at once (a pool of that many connections).</summary>
    private sealed class SlowStorage(TimeSpan delay) : IGrainStorage
    {
        private int _inside;
        private int _most;
        private int _calls;

        public int Most => Volatile.Read(ref _most);

        public int Calls => Volatile.Read(ref _calls);

        public Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) => EnterAsync();

        public Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) => EnterAsync();

        public Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) => EnterAsync();

        private async Task EnterAsync()
        {
            Interlocked.Increment(ref _calls);
            var now = Interlocked.Increment(ref _inside);
            int seen;
            while (now > (seen = Volatile.Read(ref _most)) && Interlocked.CompareExchange(ref _most, now, seen) != seen)
            {
            }

            await Task.Delay(delay);
            Interlocked.Decrement(ref _inside);
        }
    }

    private static GrainId Grain(int i) => GrainId.Create("vm", $"kvm-01/vm-{i}");

    [Fact]
    public async Task Writes_BurstOf300OnAPoolOf4_AtMost4InsideAndEveryWriteDone()
    {
        var inner = new SlowStorage(TimeSpan.FromMilliseconds(2));
        var storage = new BoundedGrainStorage(inner, 4, TimeSpan.FromMinutes(1), TimeProvider.System);

        await Task.WhenAll(Enumerable.Range(0, 300).Select(i => i % 10 == 0
            ? storage.ReadStateAsync("vm", Grain(i), new GrainState<int>())
            : storage.WriteStateAsync("vm", Grain(i), new GrainState<int>(i))));

        Assert.Equal(300, inner.Calls);
        Assert.Equal(4, inner.Most);
        Assert.Equal(4, storage.MostInFlight);
    }

    [Fact]
    public async Task Write_NoTurnWithinTheWait_TimeoutNamingTheStateAndTheCallNeverMade()
    {
        var time = new FakeTimeProvider();
        var gate = new TaskCompletionSource();
        var blocking = new BlockingStorage(gate.Task);
        var storage = new BoundedGrainStorage(blocking, 1, TimeSpan.FromSeconds(30), time);
        var first = storage.WriteStateAsync("vm", Grain(1), new GrainState<int>(1));
        var second = storage.WriteStateAsync("vm-history", Grain(2), new GrainState<int>(2));

        time.Advance(TimeSpan.FromSeconds(31));
        var e = await Assert.ThrowsAsync<TimeoutException>(() => second);
        gate.SetResult();
        await first;

        Assert.Contains("'vm-history'", e.Message, StringComparison.Ordinal);
        Assert.Contains("MaxConcurrentStorageCalls", e.Message, StringComparison.Ordinal);
        Assert.Equal(1, blocking.Calls);

        // The turn the timed-out call never took is free for the next one.
        await storage.WriteStateAsync("vm", Grain(3), new GrainState<int>(3)).WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(2, blocking.Calls);
    }

    private sealed class BlockingStorage(Task until) : IGrainStorage
    {
        private int _calls;

        public int Calls => Volatile.Read(ref _calls);

        public Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) => CallAsync();

        public Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) => CallAsync();

        public Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) => CallAsync();

        private Task CallAsync()
        {
            Interlocked.Increment(ref _calls);
            return until;
        }
    }
}
