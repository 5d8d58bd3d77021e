using Orchestrator.Grains.Checkpoints;

namespace Orchestrator.Grains.VirtualMachines;

/// <summary>What fleet policies ask of a VM: policy checkpoints with the policy's retention, and protection reports.</summary>
internal sealed partial class VirtualMachineGrain
{
    private const string PolicyPrefix = "pol-";

    public async Task<PolicyCheckpointResult> CreatePolicyCheckpointAsync(PolicyCheckpointRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        PolicyNames.Validate(request.Policy, "policy");
        CheckpointSchedulePlanner.ValidateRetention(request.Retention, "policy checkpoint", "the qcow2 images");

        // A run that asks again (after a restart of its part) gets its own checkpoint back: found by the run id it
        // carries, or (made before checkpoints carried it) by the name, which follows from the run's start.
        var name = CheckpointNames.ForTime($"{PolicyPrefix}{request.Policy}-", request.RunStartedAt);
        var existing = state.State.Checkpoints.FirstOrDefault(c => c.Origin == CheckpointOrigin.Policy && c.Policy == request.Policy && c.PolicyRun == request.RunId)
            ?? (FindRecord(name) is { Origin: CheckpointOrigin.Policy } named && named.Policy == request.Policy ? named : null);
        if (existing is not null)
        {
            return new PolicyCheckpointResult(ToView(existing, sizeBytes: null), []);
        }

        var record = await CreateCheckpointCoreAsync(name, CheckpointOrigin.Policy, cancellationToken);
        record.Policy = request.Policy;
        record.PolicyRun = request.RunId;
        await _writes.WriteAsync(cancellationToken);

        var own = state.State.Checkpoints
            .Where(c => c.Origin == CheckpointOrigin.Policy && c.Policy == request.Policy)
            .Select(c => new RetainedCheckpoint(c.Name, c.CreatedAt))
            .ToList();
        var errors = new List<string>();
        var pruned = await PruneCheckpointsAsync(own, request.Retention, TimeZoneInfo.Utc, errors.Add, cancellationToken);
        if (errors.Count > 0)
        {
            LogPolicyPruneFailed(logger, VmKey, request.Policy, string.Join("; ", errors));
        }

        if (pruned.Count > 0)
        {
            await _writes.WriteAsync(cancellationToken);
        }

        return new PolicyCheckpointResult(ToView(record, sizeBytes: null), pruned);
    }

    /// <summary>Newest completed backup and newest checkpoint, for the fleet's compliance view.</summary>
    private (DateTimeOffset? Backup, DateTimeOffset? Checkpoint) LastProtection() =>
        (state.State.LastCompletedBackupAt,
         state.State.Checkpoints.Count == 0 ? null : state.State.Checkpoints.Max(c => c.CreatedAt));

    /// <summary>Tells the fleet a good backup or checkpoint exists now (best effort: the next inventory sync reports it too).</summary>
    private async Task ReportProtectionAsync(PolicyKind kind, DateTimeOffset at)
    {
        try
        {
            await GrainFactory.GetGrain<IHostIndexGrain>(Key.Host).RecordProtectionAsync(Key.Vm, kind, at);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            LogProtectionReportFailed(logger, VmKey, e.Message);
        }
    }
}
