using Orchestrator.Grains.Storage;

namespace Orchestrator.UnitTests.State;

public sealed class StateWriteGateTests
{
    /// <summary>A write that takes as long as the test says, counting overlaps the way an ETag check would see them.</summary>
    private sealed class Storage
    {
        private int _inFlight;

        public int Writes;
        public int Overlaps;
        public int Version;
        public TaskCompletionSource? Hold;

        public async Task WriteAsync()
        {
            if (Interlocked.Increment(ref _inFlight) > 1)
            {
                Interlocked.Increment(ref Overlaps);
            }

            try
            {
                await Task.Yield();
                if (Hold is { } hold)
                {
                    await hold.Task;
                }

                Interlocked.Increment(ref Writes);
                Interlocked.Increment(ref Version);
            }
            finally
            {
                Interlocked.Decrement(ref _inFlight);
            }
        }
    }

    [Fact]
    public async Task WriteAsync_ManyConcurrentRequests_NeverTwoWritesInFlight()
    {
        var storage = new Storage();
        var gate = new StateWriteGate(storage.WriteAsync);

        await Task.WhenAll(Enumerable.Range(0, 200).Select(_ => Task.Run(() => gate.WriteAsync())));

        Assert.Equal(0, storage.Overlaps);
        Assert.InRange(storage.Writes, 1, 200);
    }

    [Fact]
    public async Task WriteAsync_RequestsWhileOneIsInFlight_CoalescedIntoOneWriteAfterIt()
    {
        var storage = new Storage { Hold = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously) };
        var gate = new StateWriteGate(storage.WriteAsync);

        var first = gate.WriteAsync();
        var queued = Enumerable.Range(0, 5).Select(_ => gate.WriteAsync()).ToList();
        Assert.False(first.IsCompleted);
        storage.Hold.SetResult();
        storage.Hold = null;
        await first;
        await Task.WhenAll(queued);

        Assert.Equal(2, storage.Writes);
        Assert.Equal(0, storage.Overlaps);
    }

    [Fact]
    public async Task WriteAsync_FailedWrite_FailsItsCallersAndTheNextWriteStillRuns()
    {
        var attempts = 0;
        var gate = new StateWriteGate(async () =>
        {
            await Task.Yield();
            if (Interlocked.Increment(ref attempts) == 1)
            {
                throw new InvalidOperationException("storage down");
            }
        });

        var failing = gate.WriteAsync();
        var next = gate.WriteAsync();

        await Assert.ThrowsAsync<InvalidOperationException>(() => failing);
        await next;
        Assert.Equal(2, attempts);
    }

    [Fact]
    public async Task RunAloneAsync_WhileAWriteIsInFlight_RunsAfterItAndBeforeLaterWrites()
    {
        var order = new List<string>();
        var hold = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var gate = new StateWriteGate(async () =>
        {
            lock (order)
            {
                order.Add("write-start");
            }

            await hold.Task;
            lock (order)
            {
                order.Add("write-end");
            }
        });

        var write = gate.WriteAsync();
        var clear = gate.RunAloneAsync(() =>
        {
            lock (order)
            {
                order.Add("clear");
            }

            return Task.CompletedTask;
        });
        var later = gate.WriteAsync();
        hold.SetResult();
        await Task.WhenAll(write, clear, later);

        Assert.Equal(["write-start", "write-end", "clear", "write-start", "write-end"], order);
    }
}
