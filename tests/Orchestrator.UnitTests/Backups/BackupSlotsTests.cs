using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using Orchestrator.Grains.Backups;

namespace Orchestrator.UnitTests.Backups;

/// <summary>The silo-wide bound on backup workflows: first come first served, bounded waits, no slot lost or doubled.</summary>
public sealed class BackupSlotsTests
{
    private static BackupSlots Slots(int limit, TimeProvider? time = null) =>
        new($"slots-{Guid.NewGuid():N}", Options.Create(new BackupOptions { MaxConcurrentPerSilo = limit }), time ?? TimeProvider.System);

    [Fact]
    public async Task WaitAsync_MoreRunsThanSlots_AtMostTheLimitHoldOneAndTheRestGetThemInOrder()
    {
        var slots = Slots(2);
        var a = await slots.WaitAsync(TimeSpan.FromMinutes(1), CancellationToken.None);
        var b = await slots.WaitAsync(TimeSpan.FromMinutes(1), CancellationToken.None);
        var c = slots.WaitAsync(TimeSpan.FromMinutes(1), CancellationToken.None);
        var d = slots.WaitAsync(TimeSpan.FromMinutes(1), CancellationToken.None);

        Assert.False(c.IsCompleted);
        Assert.Null(slots.TryEnter()); // nobody jumps the queue
        Assert.Equal((2, 2), (slots.RunningCount, slots.WaitingCount));

        a.Dispose();
        var third = await c.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.False(d.IsCompleted);
        a.Dispose(); // a second dispose releases nothing more
        Assert.False(d.IsCompleted);
        Assert.Equal((2, 1), (slots.RunningCount, slots.WaitingCount));

        b.Dispose();
        var fourth = await d.WaitAsync(TimeSpan.FromSeconds(5));
        third.Dispose();
        fourth.Dispose();
        Assert.Equal((0, 0), (slots.RunningCount, slots.WaitingCount));
    }

    [Fact]
    public async Task WaitAsync_NoSlotInTime_TimesOutLeavesTheQueueAndTheNextWaiterIsServed()
    {
        var time = new FakeTimeProvider();
        var slots = Slots(1, time);
        var held = slots.TryEnter()!;
        var late = slots.WaitAsync(TimeSpan.FromSeconds(10), CancellationToken.None);
        using var cancel = new CancellationTokenSource();
        var cancelled = slots.WaitAsync(TimeSpan.FromHours(1), cancel.Token);
        var patient = slots.WaitAsync(TimeSpan.FromHours(1), CancellationToken.None);

        time.Advance(TimeSpan.FromSeconds(11));
        await Assert.ThrowsAsync<TimeoutException>(() => late);
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled);
        Assert.Equal((1, 1), (slots.RunningCount, slots.WaitingCount));

        held.Dispose();
        (await patient.WaitAsync(TimeSpan.FromSeconds(5))).Dispose();
        Assert.Equal((0, 0), (slots.RunningCount, slots.WaitingCount));
    }

    [Fact]
    public async Task Enter_RunPastItsOverlays_TakesASlotBeyondTheLimitAndNewRunsWaitUntilBelowIt()
    {
        var slots = Slots(1);
        var fresh = slots.TryEnter()!;
        var resumed = slots.Enter();
        Assert.Equal(2, slots.RunningCount);

        var next = slots.WaitAsync(TimeSpan.FromMinutes(1), CancellationToken.None);
        fresh.Dispose();
        Assert.False(next.IsCompleted); // still one running: at the limit
        resumed.Dispose();
        (await next.WaitAsync(TimeSpan.FromSeconds(5))).Dispose();
        Assert.Equal(0, slots.RunningCount);
    }

    [Fact]
    public async Task WaitAsync_ManyConcurrentRuns_NeverMoreThanTheLimitAtOnceAndAllFinish()
    {
        var slots = Slots(3);
        var running = 0;
        var most = 0;
        await Task.WhenAll(Enumerable.Range(0, 200).Select(async _ =>
        {
            using var lease = await slots.WaitAsync(TimeSpan.FromMinutes(1), CancellationToken.None);
            var now = Interlocked.Increment(ref running);
            InterlockedMax(ref most, now);
            await Task.Delay(1);
            Interlocked.Decrement(ref running);
        }));

        Assert.Equal(3, most);
        Assert.Equal((0, 0), (slots.RunningCount, slots.WaitingCount));
    }

    private static void InterlockedMax(ref int target, int value)
    {
        int seen;
        while (value > (seen = Volatile.Read(ref target)) && Interlocked.CompareExchange(ref target, value, seen) != seen)
        {
        }
    }
}
