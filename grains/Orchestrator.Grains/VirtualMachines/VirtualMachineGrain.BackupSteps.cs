using System.Diagnostics;
using System.Text.Json;
using Orchestrator.Grains.Backups;
using Orchestrator.Grains.Checkpoints;
using Orchestrator.Grains.Disks;
using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.VirtualMachines;

/// <summary>The steps of the live-backup workflow. Each checks the real chain first, so each can run again.</summary>
internal sealed partial class VirtualMachineGrain
{
    /// <summary>Refuses, before touching the VM, anything that would make the backup unsafe or doomed.</summary>
    private async Task<BackupRunState> PreflightAsync(string runId, string target, BackupRequest request, DateTimeOffset now, CancellationToken cancellationToken)
    {
        using var activity = Telemetry.Source.StartActivity("backup.preflight");
        var domain = await hypervisor.GetDomainAsync(DomainName, cancellationToken);
        if (domain.State != DomainPowerState.Running)
        {
            throw new OrchestratorException(
                ErrorCode.FailedPrecondition,
                $"VM '{VmKey}' is {domain.State}: a live backup needs a running VM; for a VM that is not running, an offline copy of its disks is safe instead");
        }

        if (domain.Disks.Count == 0)
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"VM '{VmKey}' has no file-backed disks to back up");
        }

        foreach (var disk in domain.Disks)
        {
            if (Path.GetFileName(disk.SourcePath).Contains(".orch-", StringComparison.Ordinal))
            {
                throw new OrchestratorException(ErrorCode.FailedPrecondition, $"disk '{disk.Target}' of '{VmKey}' runs on a leftover backup overlay ({disk.SourcePath}); the reconcile must commit it first");
            }

            if (!disk.ChainDescribed)
            {
                throw new OrchestratorException(ErrorCode.FailedPrecondition, $"disk '{disk.Target}' of '{VmKey}' has a backing image that is not a file, or whose format neither the domain XML nor the image header records; it cannot be backed up without guessing");
            }

            var known = state.State.Disks.FirstOrDefault(d => d.Target == disk.Target);
            if (known is null)
            {
                throw new OrchestratorException(ErrorCode.FailedPrecondition, $"disk '{disk.Target}' of '{VmKey}' is not in the inventory yet; try again after the next sync");
            }

            // A sync that ran while an earlier backup held its overlay recorded one layer more than the VM's own chain
            // (the VM running on a leftover overlay now is refused above, by its name).
            var expected = known.ChainDepth - (known.ChainDepth > 1 && IsBackupOverlay(known.SourcePath) ? 1 : 0);
            if (expected != disk.ChainDepth)
            {
                throw new OrchestratorException(ErrorCode.FailedPrecondition, $"disk '{disk.Target}' of '{VmKey}' has a chain of {disk.ChainDepth} images, expected {expected}: a foreign overlay?");
            }

            if (await hypervisor.GetBlockJobAsync(DomainName, disk.Target, cancellationToken) is { } job)
            {
                throw new OrchestratorException(ErrorCode.FailedPrecondition, $"disk '{disk.Target}' of '{VmKey}' already has a {job.Kind} block job running");
            }
        }

        var setPath = Path.Combine(target, Key.Vm, runId);
        long needed = 0;
        var disks = new List<BackupDiskState>();
        foreach (var disk in domain.Disks)
        {
            // Formats from the domain XML: qemu-img opens each image as what libvirt runs it as, never probed.
            var info = await hypervisor.Images.InfoAsync(disk.SourcePath, disk.Format, cancellationToken);
            long chainBytes = 0;
            foreach (var layer in disk.BackingChain)
            {
                chainBytes += (await hypervisor.Images.InfoAsync(layer.Path, layer.Format, cancellationToken)).ActualSize;
            }

            needed += info.ActualSize + chainBytes;
            disks.Add(new BackupDiskState
            {
                Target = disk.Target,
                BasePath = disk.SourcePath,
                Format = disk.Format,
                BackingChain = [.. disk.BackingChain.Select(l => new ChainLayerRecord { Path = l.Path, Format = l.Format })],
                OverlayPath = Path.Combine(Path.GetDirectoryName(disk.SourcePath)!, $"{Path.GetFileName(disk.SourcePath)}.orch-{runId}.qcow2"),
                BackupPath = Path.Combine(setPath, $"{disk.Target}.{(disk.BackingChain.Count > 0 ? "qcow2" : disk.Format)}"),
                BytesTotal = info.ActualSize + chainBytes,
                VirtualSize = info.VirtualSize,
            });
        }

        try
        {
            // Every directory below the root created private and never through a symbolic link (a planted
            // <target>/<vm> link out of the roots is refused), the probe likewise.
            CreateSetDirectory(setPath);
            var probe = Path.Combine(setPath, ".write-probe");
            using (var handle = SafeFiles.CreateNew(probe, backupOptions.Value.Privacy()))
            {
                await RandomAccess.WriteAsync(handle, System.Text.Encoding.UTF8.GetBytes(runId), 0, cancellationToken);
            }

            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or HypervisorException)
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"target '{target}' is not writable: {e.Message}", field: "target");
        }

        var free = await hypervisor.Images.FreeSpaceAsync(setPath, cancellationToken);
        if (free < needed)
        {
            DeleteSetDirectory(setPath);
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"target '{target}' has {free} bytes free; the disks need {needed} bytes", field: "target");
        }

        var now2 = time.GetUtcNow();
        return new BackupRunState
        {
            RunId = runId,
            StartedAt = now,
            BackupSetPath = setPath,
            Disks = disks,
            Quiesce = request.Quiesce,
            Verify = request.Verify,
            BandwidthBytesPerSecond = request.BandwidthBytesPerSecond,
            FreezeBudgetMilliseconds = request.FreezeBudget.TotalMilliseconds,
            Retention = request.Retention is { } r ? [r.KeepLast, r.KeepDaily, r.KeepWeekly, r.KeepMonthly] : null,
            Policy = request.Policy,
            PolicyVersion = request.PolicyVersion,
            PolicyRun = request.PolicyRun,
            DomainXml = await hypervisor.GetDomainXmlAsync(DomainName, inactive: true, cancellationToken),
            VmUuid = domain.Uuid,
            Steps =
            [
                new BackupStepEntry { Step = BackupStep.Admitted, At = now },
                new BackupStepEntry { Step = BackupStep.Preflight, At = now2, Note = $"{disks.Count} disks, {needed} bytes allocated, {free} bytes free on target" },
            ],
        };
    }

    /// <summary>Optional freeze, then overlays on every disk at once; the guest never pauses.</summary>
    private async Task CreateOverlaysAsync(BackupRunState run, CancellationToken cancellationToken)
    {
        var domain = await hypervisor.GetDomainAsync(DomainName, cancellationToken);
        if (run.Disks.All(d => domain.Disks.FirstOrDefault(x => x.Target == d.Target)?.SourcePath == d.OverlayPath))
        {
            return; // a crash after the snapshot but before its result was persisted
        }

        if (domain.State != DomainPowerState.Running)
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"VM '{VmKey}' is {domain.State}; no overlays were created");
        }

        run.OverlayAttempts++;
        await DeleteStrayOverlaysAsync(run, cancellationToken);
        var frozen = await FreezeAsync(run, cancellationToken);
        var freezeStart = Stopwatch.GetTimestamp();
        var thawed = false;
        try
        {
            using var call = Telemetry.Source.StartActivity("libvirt.snapshot-create-external");
            call?.SetTag("disks", run.Disks.Count);

            // The snapshot is never cancelled half way (libvirt's call cannot be, and an overlay that appears after we
            // gave up would be one nobody tracks): its outcome is always awaited, bounded by the driver's call time.
            // The freeze budget bounds the guest's freeze instead: past it the guest is thawed while the snapshot
            // finishes, and the backup is crash-consistent (refused after the fact when quiesce is required).
            var snapshot = FencedAsync(h => h.CreateExternalSnapshotAsync(DomainName, [.. run.Disks.Select(d => new OverlaySpec(d.Target, d.OverlayPath))], cancellationToken), cancellationToken);
            if (frozen)
            {
                var budget = TimeSpan.FromMilliseconds(run.FreezeBudgetMilliseconds);
                using var budgetTimer = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                if (await Task.WhenAny(snapshot, Task.Delay(budget, time, budgetTimer.Token)) != snapshot)
                {
                    await ThawAsync(run, freezeStart);
                    thawed = true;
                    run.QuiesceOutcome = $"{run.QuiesceOutcome}; thawed at the freeze budget ({budget.TotalMilliseconds:F0} ms) before the overlays were in place: crash-consistent";
                    LogFreezeBudgetExceeded(logger, VmKey, budget.TotalMilliseconds);
                }

                await budgetTimer.CancelAsync();
            }

            await snapshot;
            if (thawed && run.Quiesce == QuiesceMode.Required)
            {
                throw new OrchestratorException(
                    ErrorCode.FailedPrecondition,
                    $"quiesce is required but the overlays took longer than the freeze budget ({run.FreezeBudgetMilliseconds:F0} ms); the guest was thawed first, so the image would only be crash-consistent");
            }
        }
        finally
        {
            if (frozen && !thawed)
            {
                // Thaw always runs, whatever happened to the snapshot.
                await ThawAsync(run, freezeStart);
            }
        }
    }

    private async Task ThawAsync(BackupRunState run, long freezeStart)
    {
        try
        {
            await hypervisor.ThawFileSystemsAsync(DomainName, CancellationToken.None);
        }
        catch (HypervisorException e)
        {
            LogThawFailed(logger, VmKey, e.Message);
        }

        run.FreezeMilliseconds = Stopwatch.GetElapsedTime(freezeStart).TotalMilliseconds;
    }

    private async Task<bool> FreezeAsync(BackupRunState run, CancellationToken cancellationToken)
    {
        if (run.Quiesce == QuiesceMode.Off)
        {
            run.QuiesceOutcome = "off";
            return false;
        }

        try
        {
            using var call = Telemetry.Source.StartActivity("libvirt.fsfreeze");
            var count = await hypervisor.FreezeFileSystemsAsync(DomainName, cancellationToken);
            run.QuiesceOutcome = $"frozen ({count} file systems)";
            return true;
        }
        catch (HypervisorException e) when (run.Quiesce == QuiesceMode.Try)
        {
            run.QuiesceOutcome = $"not frozen, crash-consistent: {e.Message}";
            return false;
        }
        catch (HypervisorException e)
        {
            run.QuiesceOutcome = $"freeze failed: {e.Message}";
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"quiesce is required but the guest could not be frozen: {e.Message}");
        }
    }

    /// <summary>
    /// Copies every frozen base to the backup set, with the data digest computed while copying (the full SHA-256,
    /// which hashes every hole as zeros, is read back after the commit, outside the overlay window). The disks are
    /// copied at the same time (up to <see cref="BackupOptions.ParallelCopies"/>), except under a bandwidth limit, which is the run's
    /// whole budget. Every disk's result is persisted at once, with the intent to commit; each disk's end and the
    /// progress are only shown to views and watchers (a copy resumed after a crash starts again from zero anyway).
    /// </summary>
    private async Task CopyDisksAsync(BackupRunState run, CancellationToken cancellationToken)
    {
        await RequireOverlaysActiveAsync(run, cancellationToken);
        var waiting = new Queue<BackupDiskState>(run.Disks.Where(d => !d.Copied));
        var width = run.BandwidthBytesPerSecond > 0 ? 1 : Math.Max(1, backupOptions.Value.ParallelCopies);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var running = new List<DiskCopy>();
        try
        {
            while (waiting.Count > 0 || running.Count > 0)
            {
                while (waiting.Count > 0 && running.Count < width)
                {
                    running.Add(await StartCopyAsync(run, waiting.Dequeue(), stop.Token));
                }

                await Task.WhenAny(running.Select(c => (Task)c.Task).Append(Task.Delay(TimeSpan.FromSeconds(1), time, cancellationToken)));
                var finished = running.Where(c => c.Task.IsCompleted).ToList();
                foreach (var copy in running.Where(c => !c.Task.IsCompleted && c.Progress.BytesDone != c.Disk.BytesCopied))
                {
                    copy.Disk.BytesCopied = copy.Progress.BytesDone;
                }

                if (finished.Count == 0)
                {
                    await NoteLiveChangeAsync(run, cancellationToken);
                    continue;
                }

                foreach (var copy in finished)
                {
                    running.Remove(copy);
                    var result = await copy.Task; // a failed copy throws here; the others are stopped below
                    var disk = copy.Disk;
                    disk.BytesCopied = result.BytesCopied;
                    disk.BytesTotal = Math.Max(disk.BytesTotal, result.BytesCopied);
                    disk.Sha256 = null; // read back from the copy after the commit (VerifyDiskAsync)
                    disk.DataSha256 = result.DataSha256;
                    disk.Copied = true;
                    copy.Activity?.SetTag("bytes", result.BytesCopied);
                    copy.Activity?.Dispose();
                    Telemetry.BytesCopied.Add(result.BytesCopied, new TagList { { "host", Key.Host }, { "vm", Key.Vm } });

                    // One step record per disk, as before copies ran side by side. Not persisted one by one: every
                    // disk's result is persisted with the next step (the intent to commit) in one write, and a run
                    // resumed at Copying copies every disk again (the bases are immutable under the overlays).
                    var note = $"{disk.Target}: {result.BytesCopied} bytes in {result.Duration.TotalMilliseconds:F0} ms";
                    AddStep(run, BackupStep.Copying, note);
                    await NoteLiveChangeAsync(run, cancellationToken);

                    if (run.Disks.Count(d => d.Copied) < run.Disks.Count || run.Disks.Count == 1)
                    {
                        // Crash tests: with more disks, killed with one disk copied and the others copying or not
                        // started; with one disk, killed after its copy and before its result was persisted.
                        KillIfAsked("Copying");
                    }
                }
            }
        }
        catch
        {
            // One copy failed (or the run is cancelled): stop the others; each deletes its partial file.
            await stop.CancelAsync();
            foreach (var copy in running)
            {
                await copy.Task.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Current);
                copy.Activity?.Dispose();
            }

            throw;
        }
    }

    private async Task<DiskCopy> StartCopyAsync(BackupRunState run, BackupDiskState disk, CancellationToken cancellationToken)
    {
        // Restart an interrupted copy from the start: the base is immutable under the overlay.
        if (await hypervisor.Images.ExistsAsync(disk.BackupPath, cancellationToken))
        {
            await hypervisor.Images.DeleteAsync(disk.BackupPath, cancellationToken);
        }

        var activity = Telemetry.Source.StartActivity("qemu-img.copy");
        activity?.SetTag("disk", disk.Target);
        var progress = new CopyProgressHolder();
        // A single image: the in-process sparse copy. A chain (e.g. a linked clone over a template): the frozen chain
        // flattened into one standalone qcow2, every layer's format named, so the backup restores without the template.
        var task = hypervisor.Images.CopyAsync(
            disk.BasePath,
            disk.Format,
            disk.BackupPath,
            new CopyOptions
            {
                ComputeSha256 = false,
                ComputeDataSha256 = true,
                BandwidthBytesPerSecond = run.BandwidthBytesPerSecond,
                SourceBackingChain = [.. disk.BackingChain.Select(l => new DiskLayer(l.Path, l.Format))],
                TargetFormat = disk.BackupFormat,
                Privacy = backupOptions.Value.Privacy(),
            },
            progress,
            cancellationToken);
        return new DiskCopy(disk, task, progress, activity);
    }

    private sealed record DiskCopy(BackupDiskState Disk, Task<CopyResult> Task, CopyProgressHolder Progress, Activity? Activity);

    /// <summary>Active commit of each overlay, awaited by event, pivoted, confirmed in the domain definition.</summary>
    private async Task CommitDisksAsync(BackupRunState run, CancellationToken cancellationToken)
    {
        foreach (var disk in run.Disks.Where(d => !d.Committed))
        {
            using var activity = Telemetry.Source.StartActivity("libvirt.block-commit");
            activity?.SetTag("disk", disk.Target);
            var domain = await hypervisor.GetDomainAsync(DomainName, cancellationToken);
            var live = domain.Disks.FirstOrDefault(d => d.Target == disk.Target)
                ?? throw new OrchestratorException(ErrorCode.Internal, $"disk '{disk.Target}' disappeared from '{VmKey}'");
            if (live.SourcePath == disk.BasePath)
            {
                RequireChainKept(disk, live);
                disk.Committed = true; // the base is active again: committed (or never overlaid)
            }
            else if (live.SourcePath != disk.OverlayPath)
            {
                throw new OrchestratorException(ErrorCode.Internal, $"disk '{disk.Target}' of '{VmKey}' runs on '{live.SourcePath}', neither its base nor this run's overlay");
            }
            else if (!domain.IsActive)
            {
                await CommitOfflineAsync(disk, cancellationToken);
            }
            else
            {
                await CommitLiveAsync(disk, cancellationToken);
            }

            // Not persisted: a resumed commit reads each disk's chain first and skips a disk already on its base.
            await NoteLiveChangeAsync(run, cancellationToken);
        }
    }

    private async Task CommitLiveAsync(BackupDiskState disk, CancellationToken cancellationToken)
    {
        using var _ = await fence.AcquireAsync(VmKey, cancellationToken);
        if (await hypervisor.GetBlockJobAsync(DomainName, disk.Target, cancellationToken) is null)
        {
            // Explicit base: exactly the overlay merges into the image that was active before it, never deeper
            // (libvirt's default base is the deepest image: a shared template would take the clone's data).
            await hypervisor.StartActiveCommitAsync(DomainName, disk.Target, disk.BasePath, 0, cancellationToken);
        }

        using (var ready = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
        {
            ready.CancelAfter(TimeSpan.FromMinutes(30));
            await hypervisor.WaitForBlockJobReadyAsync(DomainName, disk.Target, ready.Token);
        }

        KillIfAsked("Committing");
        var delay = TimeSpan.FromMilliseconds(100);
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await hypervisor.PivotAsync(DomainName, disk.Target, cancellationToken);
                break;
            }
            catch (HypervisorException e) when (attempt < backupOptions.Value.PivotAttempts && e.Kind != HypervisorErrorKind.NoBlockJob)
            {
                LogPivotRetry(logger, VmKey, disk.Target, attempt, e.Message);
                await Task.Delay(delay, time, cancellationToken);
                delay *= 2;
            }
        }

        // Never clean up before the definition shows the base active again, over the same chain as before the run.
        var after = await hypervisor.GetDomainAsync(DomainName, cancellationToken);
        var live = after.Disks.First(d => d.Target == disk.Target);
        if (live.SourcePath != disk.BasePath)
        {
            throw new OrchestratorException(ErrorCode.Internal, $"after the pivot '{disk.Target}' still runs on '{live.SourcePath}'");
        }

        RequireChainKept(disk, live);
        disk.Committed = true;
        TrackBackup();
    }

    /// <summary>The VM stopped with our overlay in its chain: qemu-img commit, and the definition points back at the base.</summary>
    private async Task CommitOfflineAsync(BackupDiskState disk, CancellationToken cancellationToken)
    {
        using var _ = await fence.AcquireAsync(VmKey, cancellationToken);
        using var activity = Telemetry.Source.StartActivity("qemu-img.commit");
        activity?.SetTag("disk", disk.Target);
        // qemu-img commit -b base: into exactly the image that was active before the overlay, every layer's format named.
        List<DiskLayer> below = [new(disk.BasePath, disk.Format), .. disk.BackingChain.Select(l => new DiskLayer(l.Path, l.Format))];
        await hypervisor.Images.CommitAsync(disk.OverlayPath, below, cancellationToken);
        var xml = await hypervisor.GetDomainXmlAsync(DomainName, inactive: true, cancellationToken);
        var chain = disk.BackingChain.Select(l => (l.Path, l.Format)).ToList();
        await hypervisor.DefineDomainAsync(DomainXmlEditor.PointDiskAt(xml, disk.Target, disk.BasePath, disk.Format, chain), cancellationToken);
        disk.Committed = true;
        TrackBackup();
        LogCommittedOffline(logger, VmKey, disk.Target);
    }

    /// <summary>The disk's chain below its base must be the one recorded before the run: same images, same order.</summary>
    private void RequireChainKept(BackupDiskState disk, DomainDisk live)
    {
        var before = disk.BackingChain.Select(l => l.Path);
        var now = live.BackingChain.Select(l => l.Path);
        if (!before.SequenceEqual(now, StringComparer.Ordinal))
        {
            throw new OrchestratorException(
                ErrorCode.Internal,
                $"disk '{disk.Target}' of '{VmKey}' is on '{disk.BasePath}' but its chain below changed: [{string.Join(", ", before)}] before the run, [{string.Join(", ", now)}] now");
        }
    }

    private async Task CleanOverlaysAsync(BackupRunState run, CancellationToken cancellationToken)
    {
        var domain = await hypervisor.GetDomainAsync(DomainName, cancellationToken);
        foreach (var disk in run.Disks)
        {
            if (Uses(domain, disk.OverlayPath))
            {
                throw new OrchestratorException(ErrorCode.Internal, $"overlay '{disk.OverlayPath}' is still in use; not deleting it");
            }

            if (await hypervisor.Images.ExistsAsync(disk.OverlayPath, cancellationToken))
            {
                await hypervisor.Images.DeleteAsync(disk.OverlayPath, cancellationToken);
            }
        }
    }

    /// <summary>
    /// Reads every copy back for its SHA-256 (for the manifest) and its data digest, which must match the one taken
    /// while copying; with verification on, also runs qemu-img check beside it. All disks at once. This runs after the
    /// commit: hashing a large, mostly empty disk no longer keeps the VM on its overlays.
    /// </summary>
    private async Task VerifyAsync(BackupRunState run, CancellationToken cancellationToken)
    {
        await Task.WhenAll(run.Disks.Where(d => !d.Verified).Select(d => VerifyDiskAsync(d, run.Verify, cancellationToken)));
        await WriteManifestAsync(run, cancellationToken);
    }

    private async Task VerifyDiskAsync(BackupDiskState disk, bool check, CancellationToken cancellationToken)
    {
        using var activity = Telemetry.Source.StartActivity("backup.verify-disk");
        activity?.SetTag("disk", disk.Target);
        var checking = check ? hypervisor.Images.CheckAsync(disk.BackupPath, disk.BackupFormat, cancellationToken) : null;
        var digests = await hypervisor.Images.ComputeDigestsAsync(disk.BackupPath, cancellationToken);
        if (checking is not null && await checking is { Clean: false } result)
        {
            throw new OrchestratorException(ErrorCode.Internal, $"copy of '{disk.Target}' failed qemu-img check: {result.Errors} errors, {result.Leaks} leaks");
        }

        if (disk.DataSha256 is not null && !string.Equals(digests.DataSha256, disk.DataSha256, StringComparison.OrdinalIgnoreCase))
        {
            throw new OrchestratorException(ErrorCode.Internal, $"copy of '{disk.Target}' does not match what was copied: data digest {digests.DataSha256} read back, {disk.DataSha256} written");
        }

        // A run copied before the data digest existed carries the full SHA-256 from its copy instead.
        if (disk.Sha256 is not null && !string.Equals(digests.Sha256, disk.Sha256, StringComparison.OrdinalIgnoreCase))
        {
            throw new OrchestratorException(ErrorCode.Internal, $"copy of '{disk.Target}' does not match its checksum: {digests.Sha256} read back, {disk.Sha256} written");
        }

        disk.Sha256 = digests.Sha256;
        disk.Verified = check;
    }

    private async Task WriteManifestAsync(BackupRunState run, CancellationToken cancellationToken)
    {
        CreateSetDirectory(run.BackupSetPath);
        var nvram = await CopyNvramIntoSetAsync(run, cancellationToken);
        var manifest = new
        {
            format = "orchestrator-backup/1",
            orchestrator_version = typeof(VirtualMachineGrain).Assembly.GetName().Version?.ToString(),
            run = BackupRunKeys.Of(Key.Host, Key.Vm, run.RunId),
            host = Key.Host,
            vm = Key.Vm,
            vm_uuid = run.VmUuid,
            started_at = run.StartedAt,
            finished_at = time.GetUtcNow(),
            quiesce = run.QuiesceOutcome,
            freeze_ms = run.FreezeMilliseconds,
            guest_paused_ms = run.PausedMilliseconds,
            disks = run.Disks.Select(d => new
            {
                target = d.Target,
                file = Path.GetFileName(d.BackupPath),
                format = d.BackupFormat,
                source = d.BasePath,
                source_format = d.Format,

                // The chain the disk ran on below its active image; the copy holds all of it, flattened.
                source_backing_chain = d.BackingChain.Select(l => new { path = l.Path, format = l.Format }),
                virtual_size = d.VirtualSize,
                bytes = d.BytesCopied,
                sha256 = d.Sha256,
                data_sha256 = d.DataSha256,
                verified = d.Verified,
            }),
            domain_xml = run.DomainXml,
            nvram,
        };
        CreateSetDirectory(run.BackupSetPath);

        // A new file of a random name (O_EXCL|O_NOFOLLOW, 0600) renamed over manifest.json: no planted link is followed.
        await SafeFiles.WriteAtomicAsync(
            Path.Combine(run.BackupSetPath, "manifest.json"),
            JsonSerializer.SerializeToUtf8Bytes(manifest, ManifestJson),
            backupOptions.Value.Privacy(),
            cancellationToken);
    }

    /// <summary>Creates the set's directory (and any missing one from its root down), private, through no symbolic link.</summary>
    private void CreateSetDirectory(string setPath)
    {
        var root = BackupTargets.RealRootOf(setPath, backupOptions.Value)
            ?? throw new OrchestratorException(ErrorCode.FailedPrecondition, $"'{setPath}' is not under a configured backup root (Orchestrator:Backup:Roots)");
        var privacy = backupOptions.Value.Privacy();
        if (!Directory.Exists(root))
        {
            // A configured root that is not there yet (the administrator's own path): made like the rest.
            var existing = root;
            while (!Directory.Exists(existing))
            {
                existing = Path.GetDirectoryName(existing) ?? "/";
            }

            SafeFiles.CreateDirectories(existing, root, privacy);
        }

        SafeFiles.CreateDirectories(root, setPath, privacy);
    }

    private static readonly JsonSerializerOptions ManifestJson = new() { WriteIndented = true };

    private async Task<bool> AnyOverlayActiveAsync(BackupRunState run, CancellationToken cancellationToken)
    {
        var domain = await hypervisor.GetDomainAsync(DomainName, cancellationToken);
        return run.Disks.Any(d => domain.Disks.Any(x => x.SourcePath == d.OverlayPath));
    }

    private async Task RequireOverlaysActiveAsync(BackupRunState run, CancellationToken cancellationToken)
    {
        var domain = await hypervisor.GetDomainAsync(DomainName, cancellationToken);
        var missing = run.Disks.Where(d => domain.Disks.FirstOrDefault(x => x.Target == d.Target)?.SourcePath != d.OverlayPath).Select(d => d.Target).ToList();
        if (missing.Count > 0)
        {
            throw new OrchestratorException(ErrorCode.Internal, $"overlays of {string.Join(", ", missing)} are not active: the bases are not frozen, copying would be unsafe");
        }
    }

    private async Task DeleteStrayOverlaysAsync(BackupRunState run, CancellationToken cancellationToken)
    {
        var domain = await hypervisor.GetDomainAsync(DomainName, cancellationToken);
        foreach (var disk in run.Disks)
        {
            await DeleteOverlayIfUnusedAsync(domain, disk.OverlayPath, cancellationToken);
        }
    }

    /// <summary>Deletes an overlay file that exists and that no disk of <paramref name="domain"/> runs on or has in its chain.</summary>
    private async Task DeleteOverlayIfUnusedAsync(DomainInfo domain, string overlayPath, CancellationToken cancellationToken)
    {
        if (!Uses(domain, overlayPath) && await hypervisor.Images.ExistsAsync(overlayPath, cancellationToken))
        {
            await hypervisor.Images.DeleteAsync(overlayPath, cancellationToken);
        }
    }

    /// <summary>Whether a disk of <paramref name="domain"/> runs on <paramref name="path"/> or has it in its backing chain.</summary>
    private static bool Uses(DomainInfo domain, string path) =>
        domain.Disks.Any(d => d.SourcePath == path || d.BackingChain.Any(l => l.Path == path));

    private void DeleteBackupSet(BackupRunState run) => DeleteSetDirectory(run.BackupSetPath);

    /// <summary>
    /// Deletes a backup set's directory, only where it really is what was recorded (no symbolic link on its path, still
    /// under a root), and without following any link inside it.
    /// </summary>
    private void DeleteSetDirectory(string setPath)
    {
        try
        {
            var real = SafeFiles.ResolveExistingPrefix(setPath);
            if (real != Path.TrimEndingDirectorySeparator(Path.GetFullPath(setPath)) || BackupTargets.RealRootOf(real, backupOptions.Value) is not { } root || real == root)
            {
                LogSetDeleteRefused(logger, VmKey, setPath, real);
                return;
            }

            SafeFiles.DeleteTree(setPath);
        }
        catch (IOException e)
        {
            LogSetDeleteFailed(logger, VmKey, setPath, e.Message);
        }
        catch (UnauthorizedAccessException e)
        {
            LogSetDeleteFailed(logger, VmKey, setPath, e.Message);
        }
    }

    private void ApplyRetention(BackupRunState finished, int[] retention, List<BackupRunState> history)
    {
        if (retention.All(count => count <= 0))
        {
            // Refused at admission; a run persisted before that check must not prune everything either.
            LogRetentionIgnored(logger, VmKey, finished.RunId);
            return;
        }

        var candidates = history
            .Where(r => r.Step == BackupStep.Completed && r.Policy == finished.Policy && Directory.Exists(r.BackupSetPath))
            .ToList();
        // One retention rule set for checkpoints and backups: newest N plus the newest per day / ISO week / month.
        var prune = CheckpointSchedulePlanner.SelectForPruning(
                candidates.Select(r => new RetainedCheckpoint(r.RunId, r.StartedAt)),
                new RetentionPolicy(KeepLast: retention[0], Daily: retention[1], Weekly: retention[2], Monthly: retention[3]),
                TimeZoneInfo.Utc)
            .Select(c => c.Name)
            .ToHashSet(StringComparer.Ordinal);
        foreach (var run in candidates.Where(r => prune.Contains(r.RunId)))
        {
            DeleteBackupSet(run);
            run.Steps.Add(new BackupStepEntry { Step = BackupStep.Completed, At = time.GetUtcNow(), Note = $"pruned by retention after {finished.RunId}" });
            LogPruned(logger, VmKey, run.RunId);
        }
    }

    /// <summary>Progress from the copy, read by the grain between awaits (the copy reports from another thread).</summary>
    private sealed class CopyProgressHolder : IProgress<CopyProgress>
    {
        private long _bytesDone;

        public long BytesDone => Interlocked.Read(ref _bytesDone);

        public void Report(CopyProgress value) => Interlocked.Exchange(ref _bytesDone, value.BytesDone);
    }
}
