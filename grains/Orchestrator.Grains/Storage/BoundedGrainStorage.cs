using Orleans.Storage;

namespace Orchestrator.Grains.Storage;

/// <summary>
/// At most <c>limit</c> grain-storage calls of this silo in flight at once, the rest waiting here in order, each at
/// most <c>maxWait</c> (then a <see cref="TimeoutException"/> that says why). Sized to the database connection pool, a
/// burst of writes (thousands of workflows started at once) queues in the process instead of timing out inside the
/// database driver's pool: the pool never has more callers than connections.
/// </summary>
/// <remarks>
/// Calls are passed on unchanged (same state, same ETag), only later: what a write stores and how a conflict is
/// detected does not change. A call whose wait ran out was never passed on, so it changed nothing.
/// </remarks>
internal sealed class BoundedGrainStorage(IGrainStorage inner, int limit, TimeSpan maxWait, TimeProvider time) : IGrainStorage
{
    private readonly SemaphoreSlim _slots = new(Math.Max(1, limit), Math.Max(1, limit));

    private int _inFlight;
    private int _mostInFlight;

    /// <summary>The most calls seen in flight at once (for tests and diagnostics).</summary>
    public int MostInFlight => Volatile.Read(ref _mostInFlight);

    public int Limit { get; } = Math.Max(1, limit);

    public Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) =>
        RunAsync("read", stateName, grainId, () => inner.ReadStateAsync(stateName, grainId, grainState));

    public Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) =>
        RunAsync("write", stateName, grainId, () => inner.WriteStateAsync(stateName, grainId, grainState));

    public Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) =>
        RunAsync("clear", stateName, grainId, () => inner.ClearStateAsync(stateName, grainId, grainState));

    private async Task RunAsync(string what, string stateName, GrainId grainId, Func<Task> call)
    {
        if (!_slots.Wait(0))
        {
            var started = time.GetTimestamp();
            try
            {
                using var timeout = new CancellationTokenSource(maxWait, time);
                await _slots.WaitAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException(
                    $"grain storage busy: the {what} of '{stateName}' for {grainId} waited {time.GetElapsedTime(started).TotalSeconds:F0} s "
                    + $"for one of this silo's {Limit} storage calls (Orchestrator:Persistence:MaxConcurrentStorageCalls) and was not made");
            }
        }

        var now = Interlocked.Increment(ref _inFlight);
        int most;
        while (now > (most = Volatile.Read(ref _mostInFlight)) && Interlocked.CompareExchange(ref _mostInFlight, now, most) != most)
        {
        }

        try
        {
            await call();
        }
        finally
        {
            Interlocked.Decrement(ref _inFlight);
            _slots.Release();
        }
    }
}
