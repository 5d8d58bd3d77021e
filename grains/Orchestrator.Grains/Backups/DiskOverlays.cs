using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using Orchestrator.Grains.VirtualMachines;
using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.Backups;

/// <summary>
/// A VM's live-backup overlays, one disk at a time: their names, committing one back into exactly the image that was
/// active before it (live by block commit and pivot, or offline by qemu-img), and deleting one nothing uses. Used by
/// the live-backup workflow and by the operator's overlay repair.
/// </summary>
internal sealed partial class DiskOverlays(IHypervisor hypervisor, HostVmLocks fence, BackupOptions options, TimeProvider time, ILogger logger, string vmKey, string domainName)
{
    /// <summary>True for a path named as our live-backup overlays are.</summary>
    public static bool IsBackupOverlay(string path) => BackupOverlayPattern().IsMatch(Path.GetFileName(path));

    /// <summary>The deterministic overlay of <paramref name="basePath"/> for run <paramref name="runId"/>, beside it.</summary>
    public static string OverlayPathFor(string basePath, string runId) =>
        Path.Combine(Path.GetDirectoryName(basePath)!, $"{Path.GetFileName(basePath)}.orch-{runId}.qcow2");

    /// <summary>Whether a disk of <paramref name="domain"/> runs on <paramref name="path"/> or has it in its backing chain.</summary>
    public static bool Uses(DomainInfo domain, string path) =>
        domain.Disks.Any(d => d.SourcePath == path || d.BackingChain.Any(l => l.Path == path));

    /// <summary>Deletes an overlay file that exists and that no disk of <paramref name="domain"/> runs on or has in its chain.</summary>
    public async Task DeleteIfUnusedAsync(DomainInfo domain, string overlayPath, CancellationToken cancellationToken)
    {
        if (!Uses(domain, overlayPath) && await hypervisor.Images.ExistsAsync(overlayPath, cancellationToken))
        {
            await hypervisor.Images.DeleteAsync(overlayPath, cancellationToken);
        }
    }

    /// <summary>
    /// Active commit of the disk's overlay, awaited by event, pivoted (retried with backoff), confirmed in the domain
    /// definition. <paramref name="ready"/> runs once the job is READY, before the pivot (a crash-test point).
    /// </summary>
    public Task CommitLiveAsync(BackupDiskState disk, Action ready, CancellationToken cancellationToken) =>
        CommitLiveAsync([disk], ready, cancellationToken);

    /// <summary>
    /// Active commits of several disks' overlays side by side (QEMU runs one block job per disk; each is started,
    /// awaited READY by event and pivoted on its own), under the VM's fence once; then one read of the definition must
    /// show every one of them on its base again, over the same chain as before, before any is marked committed.
    /// <paramref name="ready"/> runs as each job is READY, before its pivot (a crash-test point).
    /// </summary>
    public async Task CommitLiveAsync(IReadOnlyList<BackupDiskState> disks, Action ready, CancellationToken cancellationToken)
    {
        using var _ = await fence.AcquireAsync(vmKey, cancellationToken);
        await Task.WhenAll(disks.Select(d => CommitAndPivotAsync(d, ready, cancellationToken)));

        // Never clean up before the definition shows the base active again, over the same chain as before the run.
        var after = await hypervisor.GetDomainAsync(domainName, cancellationToken);
        foreach (var disk in disks)
        {
            var live = after.Disks.First(d => d.Target == disk.Target);
            if (live.SourcePath != disk.BasePath)
            {
                throw new OrchestratorException(ErrorCode.Internal, $"after the pivot '{disk.Target}' still runs on '{live.SourcePath}'");
            }

            RequireChainKept(disk, live);
        }

        foreach (var disk in disks)
        {
            disk.Committed = true;
        }
    }

    /// <summary>One disk: its commit job started unless one runs already, READY awaited by event, pivoted.</summary>
    private async Task CommitAndPivotAsync(BackupDiskState disk, Action ready, CancellationToken cancellationToken)
    {
        if (await hypervisor.GetBlockJobAsync(domainName, disk.Target, cancellationToken) is null)
        {
            // Explicit base: exactly the overlay merges into the image that was active before it, never deeper
            // (libvirt's default base is the deepest image: a shared template would take the clone's data).
            await hypervisor.StartActiveCommitAsync(domainName, disk.Target, disk.BasePath, 0, cancellationToken);
        }

        using (var readyWait = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
        {
            readyWait.CancelAfter(TimeSpan.FromMinutes(30));
            await hypervisor.WaitForBlockJobReadyAsync(domainName, disk.Target, readyWait.Token);
        }

        ready();
        var delay = TimeSpan.FromMilliseconds(100);
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await hypervisor.PivotAsync(domainName, disk.Target, cancellationToken);
                break;
            }
            catch (HypervisorException e) when (attempt < options.PivotAttempts && e.Kind != HypervisorErrorKind.NoBlockJob)
            {
                LogPivotRetry(logger, vmKey, disk.Target, attempt, e.Message);
                await Task.Delay(delay, time, cancellationToken);
                delay *= 2;
            }
        }
    }

    /// <summary>The VM stopped with our overlay in its chain: qemu-img commit, and the definition points back at the base.</summary>
    public async Task CommitOfflineAsync(BackupDiskState disk, CancellationToken cancellationToken)
    {
        using var _ = await fence.AcquireAsync(vmKey, cancellationToken);
        using var activity = Telemetry.Source.StartActivity("qemu-img.commit");
        activity?.SetTag("disk", disk.Target);
        // qemu-img commit -b base: into exactly the image that was active before the overlay, every layer's format named.
        List<DiskLayer> below = [new(disk.BasePath, disk.Format), .. disk.BackingChain.Select(l => new DiskLayer(l.Path, l.Format))];
        await hypervisor.Images.CommitAsync(disk.OverlayPath, below, cancellationToken);
        var xml = await hypervisor.GetDomainXmlAsync(domainName, inactive: true, cancellationToken);
        var chain = disk.BackingChain.Select(l => (l.Path, l.Format)).ToList();
        await hypervisor.DefineDomainAsync(DomainXmlEditor.PointDiskAt(xml, disk.Target, disk.BasePath, disk.Format, chain), cancellationToken);
        disk.Committed = true;
        LogCommittedOffline(logger, vmKey, disk.Target);
    }

    /// <summary>The disk's chain below its base must be the one recorded before the run: same images, same order.</summary>
    public void RequireChainKept(BackupDiskState disk, DomainDisk live)
    {
        var before = disk.BackingChain.Select(l => l.Path);
        var now = live.BackingChain.Select(l => l.Path);
        if (!before.SequenceEqual(now, StringComparer.Ordinal))
        {
            throw new OrchestratorException(
                ErrorCode.Internal,
                $"disk '{disk.Target}' of '{vmKey}' is on '{disk.BasePath}' but its chain below changed: [{string.Join(", ", before)}] before the run, [{string.Join(", ", now)}] now");
        }
    }

    /// <summary>The live-backup overlay naming: &lt;disk&gt;.orch-&lt;runId&gt;.qcow2.</summary>
    [GeneratedRegex(@"\.orch-[^/]+\.qcow2$")]
    private static partial Regex BackupOverlayPattern();

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: pivot of {Disk} failed (attempt {Attempt}), retrying: {Reason}")]
    private static partial void LogPivotRetry(ILogger logger, string key, string disk, int attempt, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: {Disk} committed offline (the VM was shut off with the overlay active)")]
    private static partial void LogCommittedOffline(ILogger logger, string key, string disk);
}
