using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.Backups;

/// <summary>
/// Decides, before a backup job starts, whether the VM's chain can take an incremental, and if not, why: the first
/// reason found is recorded in the run. libvirt checks the bitmaps themselves when the job starts (present, not in use
/// by another job, consistent after an unclean QEMU exit); a refusal there turns the run into a full as well.
/// </summary>
internal static class IncrementalChainPlanner
{
    public sealed record ChainDecision(bool Incremental, string Reason, bool RedefineCheckpoint = false)
    {
        public static ChainDecision Full(string reason) => new(false, reason);
    }

    /// <param name="parentProblem">The chain's newest set checked: null when it is there and whole, else why not.</param>
    public static ChainDecision Decide(
        BackupRequest request,
        IncrementalChainState? chain,
        DomainInfo domain,
        IReadOnlyCollection<string> checkpoints,
        DateTimeOffset now,
        string? parentProblem)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(domain);
        if (!request.Incremental)
        {
            return ChainDecision.Full("full asked for");
        }

        if (chain is null)
        {
            return ChainDecision.Full("no checkpoint yet: the first backup of the chain is a full");
        }

        if (chain.InvalidatedBy is { } invalidated)
        {
            return ChainDecision.Full($"chain invalidated by {invalidated}");
        }

        if (chain.VmUuid != Guid.Empty && chain.VmUuid != domain.Uuid)
        {
            return ChainDecision.Full($"the VM's uuid changed ({chain.VmUuid} -> {domain.Uuid}): another VM under this name");
        }

        if (request.FullEveryRuns > 0 && chain.Length >= request.FullEveryRuns)
        {
            return ChainDecision.Full($"full_every {request.FullEveryRuns} runs: the chain holds {chain.Length}");
        }

        if (request.FullEveryAge is { } age && now - chain.FullAt >= age)
        {
            return ChainDecision.Full($"full_every {age}: the chain's full is from {chain.FullAt:u}");
        }

        foreach (var disk in domain.Disks.Where(d => d.Format == "qcow2"))
        {
            if (chain.Disks.FirstOrDefault(d => d.Target == disk.Target) is not { } known || known.SourcePath != disk.SourcePath || known.SourceFormat != disk.Format)
            {
                return ChainDecision.Full($"disk {disk.Target} changed since the chain's last backup (now {disk.SourcePath})");
            }
        }

        if (parentProblem is { } problem)
        {
            return ChainDecision.Full(problem);
        }

        var parentRun = chain.LastRunId;
        if (!checkpoints.Contains(chain.Checkpoint))
        {
            return string.IsNullOrEmpty(chain.CheckpointXml)
                ? ChainDecision.Full($"checkpoint {chain.Checkpoint} is gone from libvirt and no XML was kept to define it again")
                : new ChainDecision(true, $"changes since {parentRun} (checkpoint {chain.Checkpoint})", RedefineCheckpoint: true);
        }

        return new ChainDecision(true, $"changes since {parentRun} (checkpoint {chain.Checkpoint})");
    }
}
