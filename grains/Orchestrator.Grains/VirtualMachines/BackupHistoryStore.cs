using Orchestrator.Grains.Backups;
using Orleans.Storage;

namespace Orchestrator.Grains.VirtualMachines;

/// <summary>
/// A VM's finished runs ("vm-history"), read from storage when asked and written once per finished run. Only the
/// newest finished run stays in memory (whoever watched a run asks for it once it ends); everything else is read on
/// demand, so a VM grain's footprint does not grow with its history.
/// </summary>
/// <remarks>
/// The one writer of this state: every read-modify-write runs alone (the backup task ends runs, activation migrates).
/// Each update reads the stored row first, so its ETag is always the current one and nothing but the newest run is
/// held between calls.
/// </remarks>
internal sealed class BackupHistoryStore(IGrainStorage storage, GrainId grain)
{
    public const string StateName = "vm-history";

    private readonly SemaphoreSlim _gate = new(1, 1);

    /// <summary>The newest finished run seen by this activation, or null.</summary>
    public BackupRunState? Newest { get; private set; }

    /// <summary>Reads the stored history (oldest first); the caller drops it when done.</summary>
    public async Task<List<BackupRunState>> ReadAsync(CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            var stored = await ReadStoredAsync();
            Newest = stored.State!.Runs.LastOrDefault() ?? Newest;
            return stored.State!.Runs;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Reads the stored history, applies <paramref name="change"/> and writes it once (never a partial update).</summary>
    public async Task UpdateAsync(Action<List<BackupRunState>> change, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            var stored = await ReadStoredAsync();
            change(stored.State!.Runs);
            await storage.WriteStateAsync(StateName, grain, stored);
            Newest = stored.State!.Runs.LastOrDefault();
        }
        finally
        {
            _gate.Release();
        }
    }

    private async Task<GrainState<VmBackupHistoryState>> ReadStoredAsync()
    {
        var stored = new GrainState<VmBackupHistoryState>(new VmBackupHistoryState());
        await storage.ReadStateAsync(StateName, grain, stored);
        stored.State ??= new VmBackupHistoryState();
        return stored;
    }
}
