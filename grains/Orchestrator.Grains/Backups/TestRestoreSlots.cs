namespace Orchestrator.Grains.Backups;

/// <summary>
/// How many test restores this silo restores and boots at once (Orchestrator:Backup:MaxConcurrentTestRestores): a
/// policy run that makes many VMs due queues their tests here instead of booting them all together.
/// </summary>
public sealed class TestRestoreSlots(int slots)
{
    private readonly SemaphoreSlim _slots = new(Math.Max(1, slots));

    public int Slots { get; } = Math.Max(1, slots);

    /// <summary>Waits for a slot (the caller's token bounds the wait: a test's timeout includes its wait).</summary>
    public async Task<IDisposable> AcquireAsync(CancellationToken cancellationToken)
    {
        await _slots.WaitAsync(cancellationToken);
        return new Release(_slots);
    }

    private sealed class Release(SemaphoreSlim slots) : IDisposable
    {
        private int _released;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0)
            {
                slots.Release();
            }
        }
    }
}
