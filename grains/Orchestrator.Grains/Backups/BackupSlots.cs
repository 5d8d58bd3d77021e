using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Options;

namespace Orchestrator.Grains.Backups;

/// <summary>
/// The silo-wide bound on live-backup workflows running at once (<see cref="BackupOptions.MaxConcurrentPerSilo"/>),
/// independent of any policy's budget: with budgets wide open a policy may start every VM of a host at once, and the
/// workflows' state writes would then queue behind the storage's connection pool longer than it waits. A run beyond
/// the bound waits in memory, first come first served, before it touches its VM; a run ends or is cancelled, its slot
/// goes to the next. One instance per silo; the VM grains of that silo share it.
/// </summary>
/// <remarks>
/// A slot is a count, not a lock on a VM: the VM's own operation lock (persisted with the run) is what keeps a backup
/// from starting twice, and a waiting run already holds it. A policy's budget counts the VMs it admitted, so a run that
/// waits here is counted there too: the VMs actually backed up at once are at most the smaller of the two.
/// </remarks>
internal sealed class BackupSlots : IDisposable
{
    private static readonly ConcurrentDictionary<BackupSlots, byte> Instances = new();

    /// <summary>Runs that had to wait for a slot; tag host.</summary>
    public static readonly Counter<long> QueuedRuns = Telemetry.Meter.CreateCounter<long>(
        QueuedRunsName,
        "{backup}",
        "Live-backup runs that waited for a silo backup slot");

    /// <summary>Runs waiting for a slot now; tag host.</summary>
    public static readonly ObservableUpDownCounter<long> Waiting = Telemetry.Meter.CreateObservableUpDownCounter(
        WaitingName,
        () => Instances.Keys.Select(s => new Measurement<long>(s.WaitingCount, new KeyValuePair<string, object?>("host", s.Host))),
        "{backup}",
        "Live-backup runs waiting for a silo backup slot");

    public const string QueuedRunsName = "orchestrator.backup.queued";
    public const string WaitingName = "orchestrator.backups.waiting";

    private readonly Lock _gate = new();
    private readonly LinkedList<TaskCompletionSource<Lease>> _waiting = new();
    private readonly TimeProvider _time;
    private int _running;

    public BackupSlots(string host, IOptions<BackupOptions> options, TimeProvider time)
    {
        Host = host;
        Limit = Math.Max(1, options.Value.MaxConcurrentPerSilo);
        _time = time;
        Instances.TryAdd(this, 0);
    }

    public string Host { get; }

    /// <summary>The silo stopped (its container disposes this): its waiting count is reported no more.</summary>
    public void Dispose() => Instances.TryRemove(this, out _);

    public int Limit { get; }

    /// <summary>Slots taken now (may exceed <see cref="Limit"/> by runs resumed past their overlays).</summary>
    public int RunningCount
    {
        get
        {
            lock (_gate)
            {
                return _running;
            }
        }
    }

    public int WaitingCount
    {
        get
        {
            lock (_gate)
            {
                return _waiting.Count;
            }
        }
    }

    /// <summary>A slot now if one is free and nobody waits for one; null otherwise.</summary>
    public Lease? TryEnter()
    {
        lock (_gate)
        {
            if (_running < Limit && _waiting.Count == 0)
            {
                _running++;
                return new Lease(this);
            }

            return null;
        }
    }

    /// <summary>A slot without waiting, even beyond the limit: for a run whose VM already runs on its overlays.</summary>
    public Lease Enter()
    {
        lock (_gate)
        {
            _running++;
            return new Lease(this);
        }
    }

    /// <summary>Waits (first come, first served) for a slot, at most <paramref name="timeout"/> (TimeoutException).</summary>
    public async Task<Lease> WaitAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        LinkedListNode<TaskCompletionSource<Lease>> node;
        lock (_gate)
        {
            if (_running < Limit && _waiting.Count == 0)
            {
                _running++;
                return new Lease(this);
            }

            node = _waiting.AddLast(new TaskCompletionSource<Lease>(TaskCreationOptions.RunContinuationsAsynchronously));
        }

        try
        {
            return await node.Value.Task.WaitAsync(timeout, _time, cancellationToken);
        }
        catch
        {
            lock (_gate)
            {
                if (node.List is not null)
                {
                    // Still waiting: leave the queue.
                    _waiting.Remove(node);
                    throw;
                }
            }

            // Granted while the wait ended (a grant sets the result under the lock): hand the slot on.
            node.Value.Task.Result.Dispose();
            throw;
        }
    }

    private void Release()
    {
        lock (_gate)
        {
            _running--;
            while (_running < Limit && _waiting.First is { } next)
            {
                _waiting.RemoveFirst();
                _running++;
                next.Value.SetResult(new Lease(this));
            }
        }
    }

    /// <summary>One slot; disposing it (once) gives it to the next waiting run.</summary>
    public sealed class Lease(BackupSlots owner) : IDisposable
    {
        private int _released;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0)
            {
                owner.Release();
            }
        }
    }
}
