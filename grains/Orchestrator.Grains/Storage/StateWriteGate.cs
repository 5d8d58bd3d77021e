namespace Orchestrator.Grains.Storage;

/// <summary>
/// One writer at a time for one grain state. A grain's turns interleave with the continuations of tasks it owns
/// (a backup run, a policy run) and with [AlwaysInterleave] calls, so two <c>WriteStateAsync</c> calls can be in
/// flight at once; both carry the same ETag and the second fails with an InconsistentStateException, which
/// deactivates the grain. Every write goes through here instead: a write requested while one is in flight is
/// done once after it (requests made meanwhile share that one write, which stores the state as it is then).
/// </summary>
/// <remarks>
/// The in-flight write is never cancelled (a half-cancelled write is what leaves an ETag behind); a caller's
/// token only ends its own wait. Thread-safe, although grain code calls it from the activation's scheduler.
/// </remarks>
internal sealed class StateWriteGate(Func<Task> write)
{
    private readonly Lock _gate = new();

    /// <summary>The last operation scheduled (running or waiting).</summary>
    private Task _tail = Task.CompletedTask;

    /// <summary>The last write scheduled behind another operation; shared by new requests until it starts.</summary>
    private Slot? _queued;

    /// <summary>Writes after every write requested before this one; completes once the state as of now is stored.</summary>
    public Task WriteAsync(CancellationToken cancellationToken = default)
    {
        Task task;
        lock (_gate)
        {
            if (_queued is { Started: false, Task: { } queued })
            {
                // A write that has not started yet stores whatever the state is when it starts: share it.
                task = queued;
            }
            else if (_tail.IsCompleted)
            {
                task = _tail = Start(write);
            }
            else
            {
                var slot = new Slot();
                task = _tail = AfterAsync(_tail, write, slot);
                slot.Task = task;
                _queued = slot;
            }
        }

        return cancellationToken.CanBeCanceled ? task.WaitAsync(cancellationToken) : task;
    }

    /// <summary>Runs another storage operation (a clear) alone, after every write requested before it.</summary>
    public Task RunAloneAsync(Func<Task> operation)
    {
        lock (_gate)
        {
            _queued = null;
            _tail = _tail.IsCompleted ? Start(operation) : AfterAsync(_tail, operation, null);
            return _tail;
        }
    }

    /// <summary>Completes when no write is in flight or queued (for deactivation).</summary>
    public async Task DrainAsync()
    {
        while (true)
        {
            Task pending;
            lock (_gate)
            {
                pending = _tail;
            }

            if (pending.IsCompleted)
            {
                return;
            }

            await pending.ContinueWith(static _ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Current);
        }
    }

    private static Task Start(Func<Task> operation)
    {
        try
        {
            return operation();
        }
        catch (Exception e)
        {
            return Task.FromException(e);
        }
    }

    private async Task AfterAsync(Task previous, Func<Task> operation, Slot? slot)
    {
        // The previous operation's failure belongs to its callers; this one runs regardless.
        await previous.ContinueWith(static _ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Current);
        if (slot is not null)
        {
            lock (_gate)
            {
                // From here on, a new request must not share this write: it would miss changes made during it.
                slot.Started = true;
            }
        }

        await Start(operation);
    }

    private sealed class Slot
    {
        public Task? Task { get; set; }

        public bool Started { get; set; }
    }
}
