using Orchestrator.Grains.Backups;
using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.VirtualMachines;

/// <summary>
/// <c>backup repair</c>: the way back from a run that gave up on its commit. Such a run ends Failed with the VM still
/// running on its overlay (a valid chain over an untouched base); this commits that overlay back the way the run would
/// have, once whatever blocked the commit is fixed.
/// </summary>
internal sealed partial class VirtualMachineGrain
{
    private const string RepairKind = "repair";

    public async Task<IReadOnlyList<OverlayRepair>> RepairOverlaysAsync(bool dryRun, CancellationToken cancellationToken = default)
    {
        await LearnFromHostAsync(cancellationToken);
        RequireKnown();
        ThrowIfBusy();
        if (state.State.ActiveBackup is { } active)
        {
            // Its own recovery commits its overlays; a second writer of the same chain would race it.
            throw new OrchestratorException(ErrorCode.Conflict, $"VM '{VmKey}' has backup '{active.RunId}' in progress ({active.Step}); it commits its own overlays", reason: "VM_BUSY");
        }

        using var activity = Telemetry.Source.StartActivity("backup.repair");
        activity?.SetTag("vm", VmKey);
        activity?.SetTag("dry_run", dryRun);
        var plan = await PlanRepairAsync(cancellationToken);
        if (dryRun || plan.All(p => p.Disk is null))
        {
            return [.. plan.Select(p => p.Outcome)];
        }

        var id = $"repair-{time.GetUtcNow().UtcTicks}";
        await BeginOperationAsync(RepairKind, id, cancellationToken);
        var results = new List<OverlayRepair>();
        try
        {
            foreach (var (disk, outcome) in plan)
            {
                if (disk is null)
                {
                    results.Add(outcome);
                    continue;
                }

                // Re-read right before acting: the VM may have stopped (or been changed by hand) since the plan.
                var domain = await hypervisor.GetDomainAsync(DomainName, cancellationToken);
                var live = domain.Disks.FirstOrDefault(d => d.Target == disk.Target);
                if (live is null || live.SourcePath != disk.OverlayPath || RepairRefusal(disk, live) is not null)
                {
                    results.Add(outcome with { Action = OverlayRepairAction.Refused, Reason = "the disk changed while the repair ran; left as it is" });
                    continue;
                }

                if (domain.IsActive)
                {
                    await BackupContext.Overlays.CommitLiveAsync(disk, () => CrashTest.Reached(LiveBackupWorkflow.Commit, LiveBackupWorkflow.CommitReady, 0, 0), cancellationToken);
                }
                else
                {
                    await BackupContext.Overlays.CommitOfflineAsync(disk, cancellationToken);
                }

                TrackBackup();

                // The overlay is out of every chain now (the commit confirmed the base active over its old chain).
                await BackupContext.Overlays.DeleteIfUnusedAsync(await hypervisor.GetDomainAsync(DomainName, cancellationToken), disk.OverlayPath, cancellationToken);

                LogOverlayRepaired(logger, VmKey, disk.Target, disk.OverlayPath, disk.BasePath);
                results.Add(outcome with { Action = OverlayRepairAction.Committed, Reason = $"committed into '{disk.BasePath}' and deleted" });
            }

            // What the VM runs on now, for its record, the overlays gauge and the disk chains.
            await ApplyInventoryAsync(Hosts.Inventory.From(await hypervisor.GetDomainAsync(DomainName, cancellationToken), time.GetUtcNow()), cancellationToken);
        }
        finally
        {
            await EndOperationAsync(id, CancellationToken.None);
        }

        return results;
    }

    /// <summary>
    /// Every disk on a backup overlay, with the disk state of the recorded run that created it (null when refused).
    /// An overlay is committed only when one of this VM's runs recorded it, and the live chain under it is exactly the
    /// base and chain that run recorded: never an image that is not ours, never into a base we did not see.
    /// </summary>
    private async Task<List<(BackupDiskState? Disk, OverlayRepair Outcome)>> PlanRepairAsync(CancellationToken cancellationToken)
    {
        var domain = await hypervisor.GetDomainAsync(DomainName, cancellationToken);
        var onOverlays = domain.Disks.Where(d => IsBackupOverlay(d.SourcePath)).ToList();
        if (onOverlays.Count == 0)
        {
            return [];
        }

        var history = await History.ReadAsync(cancellationToken);
        var plan = new List<(BackupDiskState?, OverlayRepair)>();
        foreach (var live in onOverlays)
        {
            var (run, recorded) = history
                .SelectMany(r => r.Disks.Where(d => d.Target == live.Target && d.OverlayPath == live.SourcePath).Select(d => (Run: r, Disk: d)))
                .LastOrDefault();
            if (recorded is null)
            {
                plan.Add((null, new OverlayRepair(live.Target, live.SourcePath, null, null, OverlayRepairAction.Refused,
                    "no backup run of this VM recorded this overlay: not ours to commit (inspect it with virsh domblklist / qemu-img info)")));
                continue;
            }

            if (RepairRefusal(recorded, live) is { } refusal)
            {
                plan.Add((null, new OverlayRepair(live.Target, live.SourcePath, recorded.BasePath, run!.RunId, OverlayRepairAction.Refused, refusal)));
                continue;
            }

            // A copy of the recorded state: the history entry itself stays as the run left it.
            var disk = recorded with { Committed = false };
            plan.Add((disk, new OverlayRepair(live.Target, live.SourcePath, recorded.BasePath, run!.RunId, OverlayRepairAction.WouldCommit,
                $"left by run '{run.RunId}' ({run.Step}); commits into '{recorded.BasePath}' ({recorded.Format})")));
        }

        return plan;
    }

    /// <summary>Why the live chain under <paramref name="live"/> is not the one the run recorded, or null when it is.</summary>
    private static string? RepairRefusal(BackupDiskState recorded, DomainDisk live)
    {
        if (!live.ChainDescribed)
        {
            return "the chain below the overlay cannot be fully named; left as it is";
        }

        List<DiskLayer> expected = [new(recorded.BasePath, recorded.Format), .. recorded.BackingChain.Select(l => new DiskLayer(l.Path, l.Format))];
        if (!live.BackingChain.SequenceEqual(expected))
        {
            return $"the chain below the overlay is [{string.Join(", ", live.BackingChain.Select(l => $"{l.Path} ({l.Format})"))}], "
                + $"not the recorded [{string.Join(", ", expected.Select(l => $"{l.Path} ({l.Format})"))}]; left as it is";
        }

        return null;
    }
}
