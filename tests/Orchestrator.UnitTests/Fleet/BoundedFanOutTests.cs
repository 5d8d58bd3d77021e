using Orchestrator.Grains.Fleet;

namespace Orchestrator.UnitTests.Fleet;

public sealed class BoundedFanOutTests
{
    [Fact]
    public async Task RunAsync_ManyItems_KeepsAtMostTheLimitInFlight_AndReturnsResultsInOrder()
    {
        var (inFlight, max) = (0, 0);
        var gate = new Lock();
        var results = await BoundedFanOut.RunAsync(Enumerable.Range(0, 200).ToList(), 7, async i =>
        {
            var now = Interlocked.Increment(ref inFlight);
            lock (gate)
            {
                max = Math.Max(max, now);
            }

            await Task.Delay(1);
            Interlocked.Decrement(ref inFlight);
            return i * 2;
        });

        Assert.Equal(Enumerable.Range(0, 200).Select(i => i * 2), results);
        Assert.InRange(max, 2, 7);
    }

    [Fact]
    public async Task RunAsync_NoItems_ReturnsEmpty() =>
        Assert.Empty(await BoundedFanOut.RunAsync(Array.Empty<int>(), 4, i => Task.FromResult(i)));

    [Fact]
    public async Task RunAsync_ZeroLimit_Throws() =>
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => BoundedFanOut.RunAsync([1], 0, i => Task.FromResult(i)));

    [Fact]
    public async Task RunAsync_ACallFails_TheFailureSurfaces() =>
        await Assert.ThrowsAsync<InvalidOperationException>(() => BoundedFanOut.RunAsync(Enumerable.Range(0, 10).ToList(), 3, i =>
            i == 5 ? Task.FromException<int>(new InvalidOperationException("boom")) : Task.FromResult(i)));
}
