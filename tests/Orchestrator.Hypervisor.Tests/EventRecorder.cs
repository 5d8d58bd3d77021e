using System.Collections.Concurrent;

namespace Orchestrator.Hypervisor.Tests;

/// <summary>Collects a hypervisor's events from the moment it is created until it is disposed.</summary>
internal sealed class EventRecorder : IDisposable
{
    private readonly IHypervisor _hypervisor;
    private readonly ConcurrentQueue<DomainEvent> _events = new();
    private readonly List<(Func<DomainEvent, bool> Match, TaskCompletionSource<DomainEvent> Done)> _waiters = [];
    private readonly Lock _gate = new();

    public EventRecorder(IHypervisor hypervisor)
    {
        _hypervisor = hypervisor;
        _hypervisor.DomainEvent += OnEvent;
    }

    public IReadOnlyList<DomainEvent> Events => [.. _events];

    public IReadOnlyList<DomainEvent> For(string domain) => Events.Where(e => e.Domain == domain).ToList();

    /// <summary>The first event (already seen or still to come) that matches.</summary>
    public Task<DomainEvent> WaitForAsync(Func<DomainEvent, bool> match, TimeSpan timeout)
    {
        lock (_gate)
        {
            var seen = _events.FirstOrDefault(match);
            if (seen is not null)
            {
                return Task.FromResult(seen);
            }

            var tcs = new TaskCompletionSource<DomainEvent>(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Add((match, tcs));
            return tcs.Task.WaitAsync(timeout);
        }
    }

    public void Dispose() => _hypervisor.DomainEvent -= OnEvent;

    private void OnEvent(object? sender, DomainEvent e)
    {
        lock (_gate)
        {
            _events.Enqueue(e);
            foreach (var waiter in _waiters.Where(w => w.Match(e)).ToList())
            {
                waiter.Done.TrySetResult(e);
                _waiters.Remove(waiter);
            }
        }
    }
}
