using Orchestrator.Grains.Backups;

namespace Orchestrator.Grains.VirtualMachines;

internal sealed partial class VirtualMachineGrain
{
    /// <summary>
    /// Restores one of this VM's completed runs through the one restore of the cluster (<see cref="IHostRestoreGrain"/>
    /// on the target host: the run's own unless another is asked for), which reads everything from the backup set.
    /// </summary>
    public async Task<RestoreResult> RestoreAsync(RestoreRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        _ = await RestorableRunAsync(request.RunKey, cancellationToken);
        return await GrainFactory.GetGrain<IHostRestoreGrain>(request.TargetHost).RestoreAsync(request, cancellationToken);
    }

    /// <summary>The run, when it is this VM's and completed with its set still there.</summary>
    private async Task<(BackupRunState Run, string RunId)> RestorableRunAsync(string runKey, CancellationToken cancellationToken)
    {
        var (host, vm, runId) = BackupRunKeys.Parse(runKey);
        if (host != Key.Host || vm != Key.Vm)
        {
            throw OrchestratorException.InvalidArgument("run", $"run '{runKey}' does not belong to VM '{VmKey}'");
        }

        var run = await FindRunAsync(runId, cancellationToken);
        if (run.Step != BackupStep.Completed || !new BackupSet(run.BackupSetPath, backupOptions.Value).Exists)
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"run '{runKey}' is {run.Step} and has no complete backup set to restore");
        }

        return (run, runId);
    }
}
