using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.Checkpoints;

/// <summary>
/// Measures how long a domain is paused from its own lifecycle events: subscribe before the call that pauses it,
/// then <see cref="MeasureAsync"/> after. Pause = Resumed.At - Suspended.At. When no such pair arrives in time, the
/// call's own duration stands in (an upper bound) and <see cref="PauseSource.CallDuration"/> says so.
/// </summary>
public sealed class PauseMeter : IDisposable
{
    private readonly IHypervisor _hypervisor;
    private readonly string _domain;
    private readonly TaskCompletionSource<DateTimeOffset> _resumed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Lock _gate = new();
    private DateTimeOffset? _suspendedAt;

    public PauseMeter(IHypervisor hypervisor, string domain)
    {
        _hypervisor = hypervisor;
        _domain = domain;
        _hypervisor.DomainEvent += OnEvent;
    }

    /// <summary>True once a Suspended event of the domain has arrived.</summary>
    public bool SawSuspend
    {
        get
        {
            lock (_gate)
            {
                return _suspendedAt is not null;
            }
        }
    }

    /// <summary>
    /// The pause: from the events when both arrived (waiting up to <paramref name="eventGrace"/> for a Resumed that
    /// trails the call), else <paramref name="callDuration"/>.
    /// </summary>
    public async Task<(TimeSpan Pause, PauseSource Source)> MeasureAsync(TimeSpan callDuration, TimeSpan eventGrace, CancellationToken cancellationToken = default)
    {
        if (SawSuspend)
        {
            try
            {
                var resumedAt = await _resumed.Task.WaitAsync(eventGrace, cancellationToken);
                DateTimeOffset suspendedAt;
                lock (_gate)
                {
                    suspendedAt = _suspendedAt!.Value;
                }

                var pause = resumedAt - suspendedAt;
                if (pause >= TimeSpan.Zero)
                {
                    return (pause, PauseSource.Events);
                }
            }
            catch (TimeoutException)
            {
            }
        }

        return (callDuration, PauseSource.CallDuration);
    }

    public void Dispose() => _hypervisor.DomainEvent -= OnEvent;

    private void OnEvent(object? sender, DomainEvent e)
    {
        if (e.Kind != DomainEventKind.Lifecycle || e.Domain != _domain)
        {
            return;
        }

        lock (_gate)
        {
            if (e.Lifecycle == LifecycleEventType.Suspended && _suspendedAt is null)
            {
                _suspendedAt = e.At;
            }
            else if (e.Lifecycle == LifecycleEventType.Resumed && _suspendedAt is not null)
            {
                _resumed.TrySetResult(e.At);
            }
        }
    }
}
