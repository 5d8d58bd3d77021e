using System.Diagnostics;
using System.Runtime.ExceptionServices;
using Orchestrator.Grains.VirtualMachines;
using Orchestrator.Grains.Workflows;
using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.Backups;

/// <summary>What the incremental workflow needs from the grain besides the run's records: the VM's chain.</summary>
internal interface IIncrementalChainRecords
{
    /// <summary>The VM's chain as persisted now (null: none yet).</summary>
    IncrementalChainState? Chain { get; }

    /// <summary>Persists the VM's chain (a completed run moved it on, or something invalidated it).</summary>
    Task SaveChainAsync(IncrementalChainState? chain, CancellationToken cancellationToken);
}

/// <summary>
/// The live backup of one running VM by a libvirt push-mode backup job with a checkpoint, all its disks at one instant,
/// as its steps read top to bottom: preflight (at admission: the level is decided there, full or incremental, with the
/// reason), start the job with its new checkpoint (an incremental refused by libvirt because the parent's bitmap is
/// gone or inconsistent becomes a full in the same run), wait for the copy, re-point each incremental image to its
/// parent set's image, verify, manifest, move the chain on, finish. QEMU copies while the guest runs: no overlay, no
/// commit, no pause. The run is persisted before each side effect, so running this again from any persisted step
/// (after a crash) finishes or rolls back.
/// </summary>
internal sealed partial class IncrementalBackupWorkflow : IStepObserver
{
    public const string Preflight = "preflight";
    public const string Job = "job";
    public const string Copy = "copy";
    public const string Verify = "verify";
    public const string Manifest = "manifest";
    public const string Finish = "finish";

    /// <summary>Heartbeat of the copy step: the job's end read and persisted (crash tests kill here: copied, no manifest yet).</summary>
    public const string JobEnded = "backup job ended";

    /// <summary>Checkpoints this orchestrator makes are named <c>orch-&lt;run id&gt;</c>; no other checkpoint is ever deleted.</summary>
    public const string CheckpointPrefix = "orch-";

    private const string DropCheckpoint = "abort the job and drop its checkpoint";
    private const string DeleteSet = "delete the backup set";

    /// <summary>Longest a backup job may copy (it reports progress all along; past this it is aborted).</summary>
    private static readonly TimeSpan JobTimeout = TimeSpan.FromHours(12);

    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(200);

    private readonly LiveBackupContext _context;
    private readonly BackupRunState _run;
    private readonly IBackupRunRecords _records;
    private readonly IIncrementalChainRecords _chain;
    private readonly StepRunner _steps;

    public IncrementalBackupWorkflow(LiveBackupContext context, BackupRunState run, IBackupRunRecords records, IIncrementalChainRecords chain, IReadOnlyList<IStepObserver> observers)
    {
        _context = context;
        _run = run;
        _records = records;
        _chain = chain;
        _steps = new StepRunner("backup", Telemetry.Source, context.Time, [this, .. observers], Tag);
    }

    private IHypervisor Hypervisor => _context.Hypervisor;

    private string DomainName => _context.DomainName;

    /// <summary>
    /// Admission: refuses what cannot be backed up by a job, decides the level (full or incremental, and why) and makes
    /// the set's directory. The grain holds the VM's operation lock around it.
    /// </summary>
    public static async Task<BackupRunState> PreflightAsync(
        LiveBackupContext context,
        IReadOnlyList<IStepObserver> observers,
        string runId,
        string target,
        BackupRequest request,
        DateTimeOffset now,
        IReadOnlyList<VmDiskRecord> inventory,
        IIncrementalChainRecords chain,
        CancellationToken cancellationToken)
    {
        var steps = new StepRunner("backup", Telemetry.Source, context.Time, observers);
        BackupRunState? run = null;
        try
        {
            // Reads, a write probe in the new set and, when libvirt lost the chain's checkpoint, its redefinition from
            // the saved XML (which changes nothing in the images).
            await steps.RunAsync(Preflight, Retry.None, timeout: TimeSpan.FromMinutes(2), async ct => run = await CheckAsync(context, runId, target, request, now, inventory, chain.Chain, ct), cancellationToken);
        }
        catch (StepFailedException e) when (e.InnerException is not null)
        {
            ExceptionDispatchInfo.Capture(e.InnerException).Throw();
        }

        return run!;
    }

    /// <summary>Drives the persisted run from its current step to Completed or Failed.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        try
        {
            await RunStepsAsync(cancellationToken);
        }
        catch (StepFailedException failure)
        {
            // Newest first: abort the job and drop its checkpoint (the chain stays as it was), delete the set.
            await _steps.CompensateAsync(failure, () => _run.IsTerminal, cancellationToken);
            if (!_run.IsTerminal)
            {
                await _records.FinishAsync(BackupStep.Failed, cancellationToken);
            }
        }
    }

    private async Task RunStepsAsync(CancellationToken cancellationToken)
    {
        if (_run.Step is BackupStep.Admitted or BackupStep.Preflight or BackupStep.Queued)
        {
            await _records.PersistAsync(BackupStep.Quiesce, "resumed after restart", cancellationToken);
        }

        // Preflight made the set's directory: a run that fails leaves no partial set.
        _steps.Compensate(new(DeleteSet, DeleteSetAsync));

        // 1. The job and its checkpoint, atomically, at one instant for all disks (the guest frozen around the start
        //    when asked). Not retried: a second start would make a second checkpoint. An incremental libvirt refuses
        //    because the parent's bitmap is missing or inconsistent becomes a full here, with the reason.
        await _steps.RunAsync(
            Job,
            Retry.None,
            timeout: TimeSpan.FromMinutes(5), // libvirt's call is bounded by the driver; the freeze by its budget
            StartJobAsync,
            cancellationToken,
            compensate: new(DropCheckpoint, DropCheckpointAsync),
            passed: Passed(BackupStep.Quiesce));

        // 2. QEMU copies (only the changed clusters of an incremental); progress is shown, the end read once.
        await _steps.RunAsync(Copy, Retry.None, timeout: JobTimeout, WaitForJobAsync, cancellationToken, passed: Passed(BackupStep.Copying));

        // 3. Each incremental image re-pointed to its parent set's image (qemu-img rebase -u, formats named) before
        //    anything opens it, then read back: digest, qemu-img check. 4. The manifest beside the images.
        await _steps.RunAsync(Verify, Retry.Bounded(3, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(10)), timeout: null /* reads every copy once */, VerifyDisksAsync, cancellationToken);
        await _steps.RunAsync(Manifest, Retry.None, timeout: TimeSpan.FromMinutes(2), WriteManifestAsync, cancellationToken);
        _steps.Discharge(DropCheckpoint);

        // 5. The chain moves on to this run (its checkpoint, its XML, its set); older checkpoints of ours are deleted.
        //    Into the history; the run's retention prunes older sets of its policy.
        await _steps.RunAsync(Finish, Retry.None, timeout: TimeSpan.FromMinutes(5), FinishAsync, cancellationToken);
    }

    private bool Passed(BackupStep step) => _run.Step > step;

    // ---- Compensations -------------------------------------------------------------------------------------------

    private Task DeleteSetAsync(StepFailedException failure, CancellationToken cancellationToken)
    {
        new BackupSet(_run.BackupSetPath, _context.Options).Delete(_context.Logger, _context.VmKey);
        return Task.CompletedTask;
    }

    /// <summary>
    /// A job still running is aborted, and this run's checkpoint deleted with its bitmaps: libvirt merges them into the
    /// parent checkpoint's, so the chain goes on from the parent as if this run never happened. When that fails (e.g.
    /// QEMU is gone), only libvirt's record of it is dropped and the chain is invalidated: the next run is a full.
    /// </summary>
    private async Task DropCheckpointAsync(StepFailedException failure, CancellationToken cancellationToken)
    {
        try
        {
            if ((await Hypervisor.GetBackupJobAsync(DomainName, cancellationToken)).State == BackupJobState.Running)
            {
                await Hypervisor.AbortBackupJobAsync(DomainName, cancellationToken);
            }
        }
        catch (HypervisorException e)
        {
            LogDropFailed(_context.Logger, _context.VmKey, _run.RunId, "abort the job", e.Message);
        }

        if (_run.Checkpoint is not { } name)
        {
            return;
        }

        try
        {
            if ((await Hypervisor.ListCheckpointsAsync(DomainName, cancellationToken)).Any(c => c.Name == name))
            {
                using var _ = await _context.Fence.AcquireAsync(_context.VmKey, cancellationToken);
                await Hypervisor.DeleteCheckpointAsync(DomainName, name, metadataOnly: false, cancellationToken);
            }
        }
        catch (HypervisorException e)
        {
            LogDropFailed(_context.Logger, _context.VmKey, _run.RunId, $"delete checkpoint {name}", e.Message);
            try
            {
                await Hypervisor.DeleteCheckpointAsync(DomainName, name, metadataOnly: true, cancellationToken);
            }
            catch (HypervisorException again)
            {
                LogDropFailed(_context.Logger, _context.VmKey, _run.RunId, $"drop the record of checkpoint {name}", again.Message);
            }

            if (_chain.Chain is { } chain)
            {
                chain.InvalidatedBy = $"failed run {_run.RunId} (its checkpoint {name} could not be merged back: {e.Message})";
                await _chain.SaveChainAsync(chain, cancellationToken);
            }
        }
    }

    // ---- Preflight -----------------------------------------------------------------------------------------------

    private static async Task<BackupRunState> CheckAsync(
        LiveBackupContext context,
        string runId,
        string target,
        BackupRequest request,
        DateTimeOffset now,
        IReadOnlyList<VmDiskRecord> inventory,
        IncrementalChainState? chain,
        CancellationToken cancellationToken)
    {
        var hypervisor = context.Hypervisor;
        var vmKey = context.VmKey;
        var domain = await hypervisor.GetDomainAsync(context.DomainName, cancellationToken);
        if (domain.State != DomainPowerState.Running)
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"VM '{vmKey}' is {domain.State}: a backup job needs a running VM");
        }

        if (domain.Disks.Count == 0)
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"VM '{vmKey}' has no file-backed disks to back up");
        }

        foreach (var disk in domain.Disks)
        {
            if (DiskOverlays.IsBackupOverlay(disk.SourcePath))
            {
                throw new OrchestratorException(ErrorCode.FailedPrecondition, $"disk '{disk.Target}' of '{vmKey}' runs on a leftover backup overlay ({disk.SourcePath}); the reconcile must commit it first");
            }

            if (!disk.ChainDescribed)
            {
                throw new OrchestratorException(ErrorCode.FailedPrecondition, $"disk '{disk.Target}' of '{vmKey}' has a backing image that is not a file, or whose format neither the domain XML nor the image header records; it cannot be backed up without guessing");
            }

            if (disk.Format is not ("qcow2" or "raw"))
            {
                throw new OrchestratorException(ErrorCode.FailedPrecondition, $"disk '{disk.Target}' of '{vmKey}' is {disk.Format}: a backup job copies qcow2 and raw disks");
            }

            if (inventory.All(d => d.Target != disk.Target))
            {
                throw new OrchestratorException(ErrorCode.FailedPrecondition, $"disk '{disk.Target}' of '{vmKey}' is not in the inventory yet; try again after the next sync");
            }

            if (await hypervisor.GetBlockJobAsync(context.DomainName, disk.Target, cancellationToken) is { } job)
            {
                throw new OrchestratorException(ErrorCode.FailedPrecondition, $"disk '{disk.Target}' of '{vmKey}' already has a {job.Kind} block job running");
            }
        }

        // The level: an incremental needs a chain whose checkpoint libvirt still has (or can be given back from the
        // saved XML) and whose newest set is still there and whole. Anything else: a full, and why.
        var set = BackupSet.For(target, context.Vm, runId, context.Options);
        var checkpoints = await hypervisor.ListCheckpointsAsync(context.DomainName, cancellationToken);
        var parentProblem = request.Incremental && chain is not null ? await CheckParentSetAsync(context, chain, cancellationToken) : null;
        var decision = IncrementalChainPlanner.Decide(request, chain, domain, checkpoints.Select(c => c.Name).ToList(), now, parentProblem);
        string? redefined = null;
        if (decision.Incremental && decision.RedefineCheckpoint)
        {
            try
            {
                using var _ = await context.Fence.AcquireAsync(vmKey, cancellationToken);
                await hypervisor.RedefineCheckpointAsync(context.DomainName, WithoutLostParent(chain!.CheckpointXml, checkpoints), cancellationToken);
                redefined = $"checkpoint {chain.Checkpoint} was lost by libvirt (VM defined again or libvirtd state lost) and defined again from its saved XML";
            }
            catch (HypervisorException e)
            {
                decision = IncrementalChainPlanner.ChainDecision.Full($"checkpoint {chain!.Checkpoint} was lost by libvirt and could not be defined again from its saved XML: {e.Message}");
            }
        }

        long needed = 0;
        var disks = new List<BackupDiskState>();
        foreach (var disk in domain.Disks)
        {
            var info = await hypervisor.Images.InfoAsync(disk.SourcePath, disk.Format, cancellationToken);
            long chainBytes = 0;
            foreach (var layer in disk.BackingChain)
            {
                chainBytes += (await hypervisor.Images.InfoAsync(layer.Path, layer.Format, cancellationToken)).ActualSize;
            }

            var tracked = disk.Format == "qcow2";
            var incremental = decision.Incremental && tracked;
            if (!incremental)
            {
                // Upper bound of what the job writes; an incremental writes what changed, unknown before it runs.
                needed += info.ActualSize + chainBytes;
            }

            var parent = incremental ? chain!.Disks.Single(d => d.Target == disk.Target) : null;
            disks.Add(new BackupDiskState
            {
                Target = disk.Target,
                BasePath = disk.SourcePath,
                Format = disk.Format,
                BackingChain = [.. disk.BackingChain.Select(l => new Disks.ChainLayerRecord { Path = l.Path, Format = l.Format })],
                OverlayPath = "",
                TargetFormat = tracked ? "qcow2" : "raw",
                BackupPath = set.ImagePath(disk.Target, tracked ? "qcow2" : "raw"),
                BytesTotal = info.ActualSize + chainBytes,
                VirtualSize = info.VirtualSize,
                Level = incremental ? BackupLevels.Incremental : BackupLevels.Full,
                LevelNote = tracked ? null : "raw disk: cannot hold a dirty bitmap, copied whole every time",
                BackingFile = parent is null ? null : Path.GetRelativePath(set.Path, parent.ImagePath),
                BackingFormat = parent?.ImageFormat,
            });
        }

        try
        {
            set.CreateDirectory();
            await set.ProbeWritableAsync(runId, cancellationToken);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or HypervisorException)
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"target '{target}' is not writable: {e.Message}", field: "target");
        }

        var free = await hypervisor.Images.FreeSpaceAsync(set.Path, cancellationToken);
        if (free < needed)
        {
            set.Delete(context.Logger, vmKey);
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"target '{target}' has {free} bytes free; the disks need {needed} bytes", field: "target");
        }

        var checkedAt = context.Time.GetUtcNow();
        return new BackupRunState
        {
            RunId = runId,
            StartedAt = now,
            BackupSetPath = set.Path,
            Disks = disks,
            Quiesce = request.Quiesce,
            Verify = request.Verify,
            BandwidthBytesPerSecond = request.BandwidthBytesPerSecond,
            FreezeBudgetMilliseconds = request.FreezeBudget.TotalMilliseconds,
            Retention = request.Retention is { } r ? [r.KeepLast, r.KeepDaily, r.KeepWeekly, r.KeepMonthly] : null,
            Policy = request.Policy,
            PolicyVersion = request.PolicyVersion,
            PolicyRun = request.PolicyRun,
            DomainXml = await hypervisor.GetDomainXmlAsync(context.DomainName, inactive: true, cancellationToken),
            VmUuid = domain.Uuid,
            Method = BackupMethod.BackupJob,
            Level = decision.Incremental ? BackupLevels.Incremental : BackupLevels.Full,
            LevelReason = redefined is null ? decision.Reason : $"{decision.Reason}; {redefined}",
            ParentRunId = decision.Incremental ? chain!.LastRunId : null,
            ParentSetPath = decision.Incremental ? chain!.LastSetPath : null,
            ParentCheckpoint = decision.Incremental ? chain!.Checkpoint : null,
            ChainIndex = decision.Incremental ? chain!.Length : 0,
            Checkpoint = CheckpointPrefix + runId,
            Steps =
            [
                new BackupStepEntry { Step = BackupStep.Admitted, At = now },
                new BackupStepEntry { Step = BackupStep.Preflight, At = checkedAt, Note = $"backup job, {(decision.Incremental ? "incremental" : "full")}: {decision.Reason}; {disks.Count} disks, {free} bytes free on target" },
            ],
        };
    }

    /// <summary>
    /// The saved checkpoint XML without its <c>&lt;parent&gt;</c> when libvirt no longer has that parent: libvirt refuses
    /// to define a checkpoint whose parent it does not know ("parent ... for moment ... not found", seen on the lab), and
    /// the parent was the chain's previous checkpoint, deleted when this one's run finished (only the newest is kept).
    /// </summary>
    internal static string WithoutLostParent(string checkpointXml, IReadOnlyList<CheckpointInfo> existing)
    {
        var document = System.Xml.Linq.XDocument.Parse(checkpointXml);
        if (document.Root?.Element("parent") is { } parent && existing.All(c => c.Name != (string?)parent.Element("name")))
        {
            parent.Remove();
        }

        return document.ToString(System.Xml.Linq.SaveOptions.DisableFormatting);
    }

    /// <summary>Null when the parent set is there and whole (manifest of that run, every image in it); else why not.</summary>
    private static async Task<string?> CheckParentSetAsync(LiveBackupContext context, IncrementalChainState chain, CancellationToken cancellationToken)
    {
        var runKey = BackupRunKeys.Of(context.Host, context.Vm, chain.LastRunId);
        if (!Directory.Exists(chain.LastSetPath))
        {
            return $"parent set {chain.LastSetPath} (run {chain.LastRunId}) is missing";
        }

        try
        {
            var manifest = BackupSetManifest.Read(chain.LastSetPath, runKey, context.Options);
            if (manifest.Run != runKey)
            {
                return $"parent set {chain.LastSetPath} failed verification: its manifest names run '{manifest.Run}', not {runKey}";
            }

            foreach (var disk in chain.Disks)
            {
                if (manifest.Disks.FirstOrDefault(d => d.Target == disk.Target) is not { } listed
                    || Path.GetFileName(listed.File) != Path.GetFileName(disk.ImagePath)
                    || !await context.Hypervisor.Images.ExistsAsync(disk.ImagePath, cancellationToken))
                {
                    return $"parent set {chain.LastSetPath} failed verification: the image of {disk.Target} ({disk.ImagePath}) is missing from it";
                }
            }
        }
        catch (OrchestratorException e)
        {
            return $"parent set {chain.LastSetPath} failed verification: {e.Message}";
        }

        return null;
    }

    // ---- 1. Job --------------------------------------------------------------------------------------------------

    private async Task StartJobAsync(CancellationToken cancellationToken)
    {
        var checkpoints = await Hypervisor.ListCheckpointsAsync(DomainName, cancellationToken);
        if (checkpoints.Any(c => c.Name == _run.Checkpoint))
        {
            // A crash after the job started and before its start was persisted: its checkpoint says it did.
            await _records.PersistAsync(BackupStep.Copying, "the job had started before the restart", cancellationToken);
            return;
        }

        var domain = await Hypervisor.GetDomainAsync(DomainName, cancellationToken);
        if (domain.State != DomainPowerState.Running)
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"VM '{_context.VmKey}' is {domain.State}; no backup job was started");
        }

        try
        {
            await StartOnceAsync(cancellationToken);
        }
        catch (HypervisorException e) when (e.Kind == HypervisorErrorKind.CheckpointNotFound && _run.Level == BackupLevels.Incremental)
        {
            // libvirt's own bitmap check (present, consistent after an unclean QEMU exit) refused the incremental:
            // the chain is broken, so this run becomes a full and starts the chain again.
            FallBackToFull($"bitmap of checkpoint {_run.ParentCheckpoint} is missing or inconsistent (libvirt: {e.Message})");
            LogFellBackToFull(_context.Logger, _context.VmKey, _run.RunId, _run.LevelReason!);
            await StartOnceAsync(cancellationToken);
        }

        await _records.PersistAsync(BackupStep.Copying, $"{_run.Level} backup job started with checkpoint {_run.Checkpoint}{(_run.ParentCheckpoint is { } p ? $" (changes since {p})" : "")}", cancellationToken);
    }

    private void FallBackToFull(string reason)
    {
        _run.Level = BackupLevels.Full;
        _run.LevelReason = $"asked for incremental, took a full: {reason}";
        _run.ParentRunId = null;
        _run.ParentSetPath = null;
        _run.ParentCheckpoint = null;
        _run.ChainIndex = 0;
        foreach (var disk in _run.Disks)
        {
            disk.Level = BackupLevels.Full;
            disk.BackingFile = null;
            disk.BackingFormat = null;
        }

        _records.Add(BackupStep.Quiesce, _run.LevelReason);
    }

    private async Task StartOnceAsync(CancellationToken cancellationToken)
    {
        // Target files left by an attempt cut short are ours (deterministic names in our own set): replaced.
        foreach (var disk in _run.Disks)
        {
            if (await Hypervisor.Images.ExistsAsync(disk.BackupPath, cancellationToken))
            {
                await Hypervisor.Images.DeleteAsync(disk.BackupPath, cancellationToken);
            }
        }

        var incremental = _run.Level == BackupLevels.Incremental;
        var spec = new BackupJobSpec(
            [.. _run.Disks.Select(d => new BackupJobDisk(d.Target, d.BackupPath, d.BackupFormat, Full: incremental && d.Level != BackupLevels.Incremental))],
            Incremental: incremental ? _run.ParentCheckpoint : null,
            NewCheckpoint: _run.Checkpoint,
            CheckpointDisks: [.. _run.Disks.Where(d => d.Format == "qcow2").Select(d => d.Target)]);
        var frozen = await FreezeAsync(cancellationToken);
        var freezeStart = Stopwatch.GetTimestamp();
        try
        {
            using var call = Telemetry.Source.StartActivity("libvirt.backup-begin");
            call?.SetTag("level", _run.Level);
            using var _ = await _context.Fence.AcquireAsync(_context.VmKey, cancellationToken);
            await Hypervisor.StartBackupJobAsync(DomainName, spec, cancellationToken);
        }
        finally
        {
            if (frozen)
            {
                await ThawAsync(freezeStart);
            }
        }
    }

    private async Task<bool> FreezeAsync(CancellationToken cancellationToken)
    {
        if (_run.Quiesce == QuiesceMode.Off)
        {
            _run.QuiesceOutcome = "off";
            return false;
        }

        try
        {
            var count = await Hypervisor.FreezeFileSystemsAsync(DomainName, cancellationToken);
            _run.QuiesceOutcome = $"frozen ({count} file systems)";
            return true;
        }
        catch (HypervisorException e) when (_run.Quiesce == QuiesceMode.Try)
        {
            _run.QuiesceOutcome = $"not frozen, crash-consistent: {e.Message}";
            return false;
        }
        catch (HypervisorException e)
        {
            _run.QuiesceOutcome = $"freeze failed: {e.Message}";
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"quiesce is required but the guest could not be frozen: {e.Message}");
        }
    }

    private async Task ThawAsync(long freezeStart)
    {
        try
        {
            await Hypervisor.ThawFileSystemsAsync(DomainName, CancellationToken.None);
        }
        catch (HypervisorException e)
        {
            LogDropFailed(_context.Logger, _context.VmKey, _run.RunId, "thaw", e.Message);
        }

        _run.FreezeMilliseconds = Stopwatch.GetElapsedTime(freezeStart).TotalMilliseconds;
    }

    // ---- 2. Copy -------------------------------------------------------------------------------------------------

    /// <summary>Polls the job until it ends (libvirt keeps the end for one read: this is the only reader).</summary>
    private async Task WaitForJobAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            var status = await Hypervisor.GetBackupJobAsync(DomainName, cancellationToken);
            switch (status.State)
            {
                case BackupJobState.Running:
                    _run.JobBytes = status.BytesProcessed;
                    await _records.NoteLiveChangeAsync(cancellationToken);
                    await Task.Delay(PollInterval, _context.Time, cancellationToken);
                    continue;
                case BackupJobState.Completed:
                    _run.JobBytes = Math.Max(status.BytesTotal, status.BytesProcessed);
                    foreach (var disk in _run.Disks)
                    {
                        disk.Copied = true;
                    }

                    await _records.PersistAsync(BackupStep.Verifying, $"backup job completed: {_run.JobBytes} bytes copied", cancellationToken);
                    _steps.Reached(Copy, JobEnded, 1, 1);
                    return;
                case BackupJobState.None:
                    throw new OrchestratorException(ErrorCode.Internal, "the backup job's end was not seen (libvirt keeps it for one read, and the process restarted meanwhile): its outcome is unknown, so its copies are not trusted");
                default:
                    throw new OrchestratorException(ErrorCode.Internal, $"backup job {status.State.ToString().ToLowerInvariant()}: {status.Error}");
            }
        }
    }

    // ---- 3. Verify -----------------------------------------------------------------------------------------------

    private async Task VerifyDisksAsync(CancellationToken cancellationToken)
    {
        foreach (var disk in _run.Disks.Where(d => !d.Verified || d.Sha256 is null))
        {
            using var activity = Telemetry.Source.StartActivity("backup.verify-disk");
            activity?.SetTag("disk", disk.Target);
            if (disk.BackupFormat == "qcow2")
            {
                // libvirt writes the live disk into an incremental target's header as its backing file: re-pointed to
                // the parent set's image before anything opens it; a full stands alone.
                await Hypervisor.Images.SetBackingAsync(disk.BackupPath, disk.BackingFile, disk.BackingFormat, cancellationToken);
            }

            var info = await Hypervisor.Images.InfoAsync(disk.BackupPath, disk.BackupFormat, cancellationToken);
            disk.BytesCopied = info.ActualSize;
            disk.BytesTotal = info.ActualSize;
            if (_run.Verify)
            {
                var check = await Hypervisor.Images.CheckAsync(disk.BackupPath, disk.BackupFormat, cancellationToken);
                if (!check.Clean)
                {
                    throw new OrchestratorException(ErrorCode.Internal, $"copy of '{disk.Target}' failed qemu-img check: {check.Errors} errors, {check.Leaks} leaks");
                }
            }

            var digests = await Hypervisor.Images.ComputeDigestsAsync(disk.BackupPath, cancellationToken);
            disk.Sha256 = digests.Sha256;
            disk.DataSha256 = digests.DataSha256;
            disk.Verified = _run.Verify;
            disk.Committed = true; // nothing to commit: the VM never left its own images
        }

        await _records.NoteLiveChangeAsync(cancellationToken);
    }

    // ---- 4. Manifest ---------------------------------------------------------------------------------------------

    private async Task WriteManifestAsync(CancellationToken cancellationToken)
    {
        var run = _run;
        var set = new BackupSet(run.BackupSetPath, _context.Options);
        var nvram = await set.CopyNvramAsync(run.DomainXml, cancellationToken);
        var manifest = new
        {
            format = "orchestrator-backup/1",
            orchestrator_version = typeof(IncrementalBackupWorkflow).Assembly.GetName().Version?.ToString(),
            run = BackupRunKeys.Of(_context.Host, _context.Vm, run.RunId),
            host = _context.Host,
            vm = _context.Vm,
            vm_uuid = run.VmUuid,
            started_at = run.StartedAt,
            finished_at = _context.Time.GetUtcNow(),
            quiesce = run.QuiesceOutcome,
            freeze_ms = run.FreezeMilliseconds,
            guest_paused_ms = 0,

            // The chain, walkable from the files alone: an incremental's images are backed (header) by the parent
            // set's images of the same disk; parent_set is that set's directory, parent its run id.
            method = run.Method.Name(),
            level = run.Level,
            level_reason = run.LevelReason,
            parent = run.ParentRunId,
            parent_run = run.ParentRunId is { } p ? BackupRunKeys.Of(_context.Host, _context.Vm, p) : null,
            parent_set = run.ParentSetPath,
            chain_index = run.ChainIndex,
            checkpoint = run.Checkpoint,
            parent_checkpoint = run.ParentCheckpoint,
            job_bytes = run.JobBytes,
            disks = run.Disks.Select(d => new
            {
                target = d.Target,
                file = Path.GetFileName(d.BackupPath),
                format = d.BackupFormat,
                level = d.Level,
                level_note = d.LevelNote,
                backing_file = d.BackingFile,
                backing_format = d.BackingFormat,
                source = d.BasePath,
                source_format = d.Format,
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
        await set.WriteManifestAsync(manifest, cancellationToken);
    }

    // ---- 5. Finish -----------------------------------------------------------------------------------------------

    private async Task FinishAsync(CancellationToken cancellationToken)
    {
        var checkpoints = await Hypervisor.ListCheckpointsAsync(DomainName, cancellationToken);
        var mine = checkpoints.FirstOrDefault(c => c.Name == _run.Checkpoint)
            ?? throw new OrchestratorException(ErrorCode.Internal, $"checkpoint {_run.Checkpoint} of this run disappeared before the run finished");
        var previous = _chain.Chain;
        var full = _run.Level == BackupLevels.Full;
        await _chain.SaveChainAsync(
            new IncrementalChainState
            {
                Checkpoint = mine.Name,
                CheckpointXml = mine.Xml,
                LastRunId = _run.RunId,
                LastSetPath = _run.BackupSetPath,
                FullRunId = full || previous is null ? _run.RunId : previous.FullRunId,
                FullAt = full || previous is null ? _run.StartedAt : previous.FullAt,
                Length = full || previous is null ? 1 : previous.Length + 1,
                VmUuid = _run.VmUuid,
                Disks = [.. _run.Disks.Select(d => new IncrementalChainDisk { Target = d.Target, SourcePath = d.BasePath, SourceFormat = d.Format, ImagePath = d.BackupPath, ImageFormat = d.BackupFormat })],
            },
            cancellationToken);

        // Only the newest checkpoint is needed: older ones of ours are deleted (parents first, each one's bitmap merged
        // into nothing as the root). A checkpoint whose bitmap is gone is dropped from libvirt's records only.
        foreach (var old in checkpoints.Where(c => c.Name != mine.Name && c.Name.StartsWith(CheckpointPrefix, StringComparison.Ordinal)))
        {
            try
            {
                using var _ = await _context.Fence.AcquireAsync(_context.VmKey, cancellationToken);
                await Hypervisor.DeleteCheckpointAsync(DomainName, old.Name, metadataOnly: false, cancellationToken);
            }
            catch (HypervisorException e)
            {
                LogDropFailed(_context.Logger, _context.VmKey, _run.RunId, $"delete old checkpoint {old.Name}", e.Message);
                try
                {
                    await Hypervisor.DeleteCheckpointAsync(DomainName, old.Name, metadataOnly: true, cancellationToken);
                }
                catch (HypervisorException again)
                {
                    LogDropFailed(_context.Logger, _context.VmKey, _run.RunId, $"drop the record of old checkpoint {old.Name}", again.Message);
                }
            }
        }

        await _records.FinishAsync(BackupStep.Completed, cancellationToken);
    }

    // ---- Observing its own steps ---------------------------------------------------------------------------------

    void IStepObserver.AttemptFailed(string step, int attempt, Exception error)
    {
        _run.Error ??= error.Message;
        LogStepFailed(_context.Logger, _context.VmKey, _run.RunId, step, attempt, error.Message);
    }

    private void Tag(Activity? activity)
    {
        activity?.SetTag("host", _context.Host);
        activity?.SetTag("vm", _context.Vm);
        activity?.SetTag("run", _run.RunId);
        activity?.SetTag("level", _run.Level);
    }
}
