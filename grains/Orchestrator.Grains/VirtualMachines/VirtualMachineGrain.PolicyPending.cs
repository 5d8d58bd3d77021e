namespace Orchestrator.Grains.VirtualMachines;

// TEMPORARY (replaced within this change): lets the API and CLI build against the new contracts.
internal sealed partial class VirtualMachineGrain
{
    public Task<PolicyCheckpointResult> CreatePolicyCheckpointAsync(PolicyCheckpointRequest request, CancellationToken cancellationToken = default) => throw new NotSupportedException();
}
