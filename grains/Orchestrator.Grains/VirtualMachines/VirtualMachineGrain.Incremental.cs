using Orchestrator.Grains.Backups;

namespace Orchestrator.Grains.VirtualMachines;

/// <summary>
/// The VM's side of incremental backups: its chain (newest checkpoint with its XML, newest set) in the hot state, the
/// admission of a backup-job run, and what invalidates the chain. An overlay backup and an internal checkpoint revert
/// change the disks in ways the bitmaps were not proven to follow on this libvirt/QEMU, so they invalidate the chain:
/// the next incremental is a full, with the reason recorded.
/// </summary>
internal sealed partial class VirtualMachineGrain
{
    /// <summary>Admits a backup-job run (full or incremental, decided in preflight) under the operation lock the caller took.</summary>
    private Task<BackupRunState> PreflightBackupJobAsync(string runId, string target, BackupRequest request, DateTimeOffset now, CancellationToken cancellationToken) =>
        IncrementalBackupWorkflow.PreflightAsync(BackupContext, [CrashTest], runId, target, request, now, state.State.Disks, new ChainRecords(this), cancellationToken);

    private Task RunBackupJobAsync(BackupRunState run, CancellationToken cancellationToken) =>
        new IncrementalBackupWorkflow(BackupContext, run, new RunRecords(this, run), new ChainRecords(this), [CrashTest]).RunAsync(cancellationToken);

    /// <summary>
    /// Marks the chain so the next incremental becomes a full with <paramref name="reason"/>; kept in memory and stored
    /// with the caller's next write (the operation that invalidates it persists its own state).
    /// </summary>
    private void InvalidateIncrementalChain(string reason)
    {
        if (state.State.IncrementalChain is { InvalidatedBy: null } chain)
        {
            chain.InvalidatedBy = reason;
        }
    }

    private IncrementalChainState? IncrementalChain => state.State.IncrementalChain;

    private async Task SaveIncrementalChainAsync(IncrementalChainState? chain, CancellationToken cancellationToken)
    {
        state.State.IncrementalChain = chain;
        await _writes.WriteAsync(cancellationToken);
    }

    private sealed class ChainRecords(VirtualMachineGrain grain) : IIncrementalChainRecords
    {
        public IncrementalChainState? Chain => grain.IncrementalChain;

        public Task SaveChainAsync(IncrementalChainState? chain, CancellationToken cancellationToken) => grain.SaveIncrementalChainAsync(chain, cancellationToken);
    }
}
