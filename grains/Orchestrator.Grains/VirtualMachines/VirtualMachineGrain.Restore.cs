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
        var (host, vm, runId) = BackupRunKeys.Parse(request.RunKey);
        if (host != Key.Host || vm != Key.Vm)
        {
            throw OrchestratorException.InvalidArgument("run", $"run '{request.RunKey}' does not belong to VM '{VmKey}'");
        }

        var run = await FindRunAsync(runId, cancellationToken);
        if (run.Step != BackupStep.Completed)
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"run '{request.RunKey}' is {run.Step} and has no complete backup set to restore");
        }

        return await GrainFactory.GetGrain<IHostRestoreGrain>(request.TargetHost).RestoreAsync(request, cancellationToken);
    }
}
