namespace Orchestrator.Grains.Fleet;

/// <summary>
/// Calls many grains with at most a given number of calls in flight (never Task.WhenAll over thousands). Runs on the
/// caller's task scheduler, so grain code stays on its activation; results come back in the items' order.
/// </summary>
internal static class BoundedFanOut
{
    public static async Task<TResult[]> RunAsync<TItem, TResult>(IReadOnlyList<TItem> items, int limit, Func<TItem, Task<TResult>> call)
    {
        ArgumentNullException.ThrowIfNull(items);
        ArgumentNullException.ThrowIfNull(call);
        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 1);
        var results = new TResult[items.Count];
        var next = -1;
        await Task.WhenAll(Enumerable.Range(0, Math.Min(limit, items.Count)).Select(_ => WorkAsync()));
        return results;

        async Task WorkAsync()
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < items.Count)
            {
                results[i] = await call(items[i]);
            }
        }
    }
}
