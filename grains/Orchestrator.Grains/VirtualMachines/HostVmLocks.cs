using System.Collections.Concurrent;

namespace Orchestrator.Grains.VirtualMachines;

/// <summary>
/// Host-local fence: every mutating hypervisor operation on a VM holds this VM's lock, so two activations of
/// one VM grain (Orleans prevents them, but a split brain during a membership change could not) never act on
/// the same domain at once.
/// </summary>
public sealed class HostVmLocks
{
    private readonly ConcurrentDictionary<string, SemaphoreSlim> _locks = new(StringComparer.Ordinal);

    public async Task<IDisposable> AcquireAsync(string vmKey, CancellationToken cancellationToken = default)
    {
        var gate = _locks.GetOrAdd(vmKey, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(cancellationToken);
        return new Releaser(gate);
    }

    private sealed class Releaser(SemaphoreSlim gate) : IDisposable
    {
        private int _released;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0)
            {
                gate.Release();
            }
        }
    }
}
