using System.Diagnostics;
using System.Runtime.ExceptionServices;
using Microsoft.Extensions.Logging;
using Orchestrator.Grains.VirtualMachines;
using Orchestrator.Grains.Workflows;
using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.Backups;

/// <summary>
/// The backup of one shut-off VM, all its disks, as its steps read top to bottom: preflight (at admission), copy while
/// the VM stays off, verify, manifest, finish with retention. A shut-off VM has no QEMU to hold its images, so there is
/// no overlay and nothing to commit: each image is read as it is (its format named, never probed; a disk over a backing
/// chain flattened into one standalone qcow2, as the live method does) and nothing of the VM is ever written. The set
/// has the same files and manifest as a live one, so <c>orchestrator restore</c> works unchanged.
/// <para>
/// A VM started during the copy would write its images under it. The copy step watches for that throughout: the
/// domain's lifecycle events (subscribed before the state is read), its state polled every second, and the write time
/// and length of every image it reads, compared before and after. Any of them moving discards the copy; the same run
/// then goes on with the live method when the VM is running or paused (same lock, same set), or copies again when it
/// is off again, at most <see cref="MaxCopyAttempts"/> times.
/// </para>
/// The run is persisted before each side effect; a process that dies mid-copy resumes at Copying on activation: the
/// partial files are deleted and the copy begins again (the images are unchanged while the VM stays off).
/// </summary>
internal sealed partial class OfflineBackupWorkflow : IStepObserver
{
    // Step names: trace spans (backup.<name>), step records, crash-test points.
    public const string Copy = "offline-copy";

    /// <summary>Heartbeat inside the copy step: a disk copied, its result not persisted yet.</summary>
    public const string DiskCopied = "disk copied offline";

    /// <summary>Copies begun before a VM that keeps being started and stopped during them fails the run.</summary>
    public const int MaxCopyAttempts = 3;

    private const string DeleteSet = "delete the backup set";

    private readonly LiveBackupContext _context;
    private readonly BackupRunState _run;
    private readonly IBackupRunRecords _records;
    private readonly StepRunner _steps;

    /// <summary>Why the last copy was discarded (the VM started during it); null when it was not.</summary>
    private string? _disturbance;

    public OfflineBackupWorkflow(LiveBackupContext context, BackupRunState run, IBackupRunRecords records, IReadOnlyList<IStepObserver> observers)
    {
        _context = context;
        _run = run;
        _records = records;
        _steps = new StepRunner("backup", Telemetry.Source, context.Time, [this, .. observers], Tag);
    }

    public IReadOnlyList<StepRecord> Steps => _steps.Records;

    private IHypervisor Hypervisor => _context.Hypervisor;

    private string DomainName => _context.DomainName;

    /// <summary>
    /// Admission of a shut-off VM: refuses, before reading anything big, what would make the copy unsafe or doomed, and
    /// makes the set's directory. Returns the run to persist. The grain holds the VM's operation lock around it.
    /// </summary>
    public static async Task<BackupRunState> PreflightAsync(
        LiveBackupContext context,
        IReadOnlyList<IStepObserver> observers,
        string runId,
        string target,
        BackupRequest request,
        DateTimeOffset now,
        IReadOnlyList<VmDiskRecord> inventory,
        CancellationToken cancellationToken)
    {
        var steps = new StepRunner("backup", Telemetry.Source, context.Time, observers);
        BackupRunState? run = null;
        try
        {
            await steps.RunAsync(LiveBackupWorkflow.Preflight, Retry.None, timeout: null, async ct => run = await CheckAsync(context, runId, target, request, now, inventory, ct), cancellationToken);
        }
        catch (StepFailedException e) when (e.InnerException is not null)
        {
            ExceptionDispatchInfo.Capture(e.InnerException).Throw();
        }

        return run!;
    }

    /// <summary>
    /// Drives the persisted run from its current step to Completed or Failed, or hands it to the live method (the run's
    /// method becomes Live, persisted at Quiesce) when the VM started during the copy and runs now.
    /// </summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        try
        {
            await RunStepsAsync(cancellationToken);
        }
        catch (StepFailedException failure)
        {
            await _steps.CompensateAsync(failure, () => _run.IsTerminal, cancellationToken);
            if (!_run.IsTerminal)
            {
                await _records.FinishAsync(BackupStep.Failed, cancellationToken);
            }
        }
    }

    private async Task RunStepsAsync(CancellationToken cancellationToken)
    {
        // Preflight made the set's directory: a run that fails leaves no partial set.
        _steps.Compensate(new(DeleteSet, DeleteSetAsync));

        // 1. Copy every disk as it is while the VM is watched to stay off. Not retried on an error (the run fails and its
        //    set is deleted); a copy the VM's start disturbed is discarded, and the run goes on live when the VM runs now
        //    or copies again when it is off again (bounded). A copy cut off by a crash begins again from zero.
        while (_run.Step is not (BackupStep.Verifying or BackupStep.Completed or BackupStep.Failed))
        {
            await _steps.RunAsync(Copy, Retry.None, timeout: null /* as long as the data takes; progress is reported */, CopyDisksAsync, cancellationToken);
            if (_disturbance is not null && await HandOverToLiveAsync(cancellationToken))
            {
                return;
            }
        }

        // 2. Read every copy back (digest, qemu-img check). 3. The manifest beside the images: the live method's steps.
        await _steps.RunAsync(LiveBackupWorkflow.Verify, Retry.None, timeout: null /* reads every copy once */, ct => LiveBackupWorkflow.VerifyDisksAsync(Hypervisor, _run, ct), cancellationToken);
        await _steps.RunAsync(LiveBackupWorkflow.Manifest, Retry.None, timeout: TimeSpan.FromMinutes(2), ct => LiveBackupWorkflow.WriteManifestAsync(_context, _run, ct), cancellationToken);

        // 4. Into the history; the run's retention prunes older sets of its policy.
        await _steps.RunAsync(LiveBackupWorkflow.Finish, Retry.None, timeout: null, ct => _records.FinishAsync(BackupStep.Completed, ct), cancellationToken);
    }

    private Task DeleteSetAsync(StepFailedException failure, CancellationToken cancellationToken)
    {
        new BackupSet(_run.BackupSetPath, _context.Options).Delete(_context.Logger, _context.VmKey);
        return Task.CompletedTask;
    }

    // ---- Preflight -----------------------------------------------------------------------------------------------

    private static async Task<BackupRunState> CheckAsync(
        LiveBackupContext context,
        string runId,
        string target,
        BackupRequest request,
        DateTimeOffset now,
        IReadOnlyList<VmDiskRecord> inventory,
        CancellationToken cancellationToken)
    {
        var hypervisor = context.Hypervisor;
        var vmKey = context.VmKey;
        var domain = await hypervisor.GetDomainAsync(context.DomainName, cancellationToken);
        if (!IsOff(domain.State))
        {
            throw new OrchestratorException(
                ErrorCode.FailedPrecondition,
                $"VM '{vmKey}' is {domain.State}: an offline copy needs a shut-off VM; a running or paused one is backed up live");
        }

        if (domain.Disks.Count == 0)
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"VM '{vmKey}' has no file-backed disks to back up");
        }

        foreach (var disk in domain.Disks)
        {
            if (DiskOverlays.IsBackupOverlay(disk.SourcePath))
            {
                throw new OrchestratorException(ErrorCode.FailedPrecondition, $"disk '{disk.Target}' of '{vmKey}' is on a leftover backup overlay ({disk.SourcePath}); the reconcile must commit it first");
            }

            if (!disk.ChainDescribed)
            {
                throw new OrchestratorException(ErrorCode.FailedPrecondition, $"disk '{disk.Target}' of '{vmKey}' has a backing image that is not a file, or whose format neither the domain XML nor the image header records; it cannot be backed up without guessing");
            }

            var known = inventory.FirstOrDefault(d => d.Target == disk.Target)
                ?? throw new OrchestratorException(ErrorCode.FailedPrecondition, $"disk '{disk.Target}' of '{vmKey}' is not in the inventory yet; try again after the next sync");
            var expected = known.ChainDepth - (known.ChainDepth > 1 && DiskOverlays.IsBackupOverlay(known.SourcePath) ? 1 : 0);
            if (expected != disk.ChainDepth)
            {
                throw new OrchestratorException(ErrorCode.FailedPrecondition, $"disk '{disk.Target}' of '{vmKey}' has a chain of {disk.ChainDepth} images, expected {expected}: a foreign overlay?");
            }
        }

        var set = BackupSet.For(target, context.Vm, runId, context.Options);
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
                BackingChain = [.. disk.BackingChain.Select(l => new Disks.ChainLayerRecord { Path = l.Path, Format = l.Format })],
                OverlayPath = "", // none: the VM is off (named if the run goes on live)
                BackupPath = set.ImagePath(disk.Target, disk.BackingChain.Count > 0 ? "qcow2" : disk.Format),
                BytesTotal = info.ActualSize + chainBytes,
                VirtualSize = info.VirtualSize,
                Committed = true, // never on an overlay: the VM's own images stay its active ones throughout
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
            Method = BackupMethod.Offline,
            StartedAt = now,
            BackupSetPath = set.Path,
            Disks = disks,
            Quiesce = request.Quiesce,
            QuiesceOutcome = $"not needed: the VM is {domain.State}, its images are copied as they are",
            Verify = request.Verify,
            BandwidthBytesPerSecond = request.BandwidthBytesPerSecond,
            FreezeBudgetMilliseconds = request.FreezeBudget.TotalMilliseconds,
            Retention = request.Retention is { } r ? [r.KeepLast, r.KeepDaily, r.KeepWeekly, r.KeepMonthly] : null,
            Policy = request.Policy,
            PolicyVersion = request.PolicyVersion,
            PolicyRun = request.PolicyRun,
            DomainXml = await hypervisor.GetDomainXmlAsync(context.DomainName, inactive: true, cancellationToken),
            VmUuid = domain.Uuid,
            Steps =
            [
                new BackupStepEntry { Step = BackupStep.Admitted, At = now },
                new BackupStepEntry { Step = BackupStep.Preflight, At = checkedAt, Note = $"{disks.Count} disks, {needed} bytes allocated, {free} bytes free on target; the VM is {domain.State}: offline copy" },
            ],
        };
    }

    /// <summary>No QEMU holds the images: shut off, or crashed (its images are as a power cut left them).</summary>
    internal static bool IsOff(DomainPowerState state) => state is DomainPowerState.ShutOff or DomainPowerState.Crashed;

    // ---- 1. Copy -------------------------------------------------------------------------------------------------

    /// <summary>
    /// One offline copy of every disk (up to <see cref="BackupOptions.ParallelCopies"/> at once; one at a time under a
    /// bandwidth limit), watched for the VM starting. Persisted first as the intent (Copying, with the attempt counted);
    /// on success every disk's result is persisted with the next step (Verifying) in one write. Disturbed: every copy of
    /// this attempt is deleted and <see cref="_disturbance"/> says why.
    /// </summary>
    private async Task CopyDisksAsync(CancellationToken cancellationToken)
    {
        var run = _run;
        _disturbance = null;
        if (run.OfflineAttempts >= MaxCopyAttempts)
        {
            throw new OrchestratorException(
                ErrorCode.FailedPrecondition,
                $"the VM was started during each of {run.OfflineAttempts} offline copies and is not running now ({run.Error ?? "see the steps"}); nothing of it was written, no set is kept: back it up when it is either off or running");
        }

        run.OfflineAttempts++;
        await _records.PersistAsync(BackupStep.Copying, run.OfflineAttempts == 1 ? "copying the disks of the shut-off VM" : $"copying again (attempt {run.OfflineAttempts} of {MaxCopyAttempts})", cancellationToken);

        // Subscribed before the state is read: a start after this line is seen either way.
        using var watch = new StartWatch(Hypervisor, DomainName);
        var domain = await Hypervisor.GetDomainAsync(DomainName, cancellationToken);
        if (!IsOff(domain.State))
        {
            // Started before this attempt began (e.g. while the silo was down after a crash mid-copy).
            _disturbance = $"the VM was {domain.State} when the copy was to begin";
            run.Error = _disturbance;
            await DeleteCopiesAsync(cancellationToken);
            return;
        }

        var before = Stamps();
        await DeleteCopiesAsync(cancellationToken); // an attempt cut off by a crash, or discarded: begun again from zero

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var waiting = new Queue<BackupDiskState>(run.Disks);
        var width = run.BandwidthBytesPerSecond > 0 ? 1 : Math.Max(1, _context.Options.ParallelCopies);
        var running = new List<LiveBackupWorkflow.DiskCopy>();
        try
        {
            while ((waiting.Count > 0 || running.Count > 0) && _disturbance is null)
            {
                while (waiting.Count > 0 && running.Count < width)
                {
                    running.Add(StartCopy(waiting.Dequeue(), stop.Token));
                }

                await Task.WhenAny(running.Select(c => (Task)c.Task).Append(watch.Started).Append(Task.Delay(TimeSpan.FromSeconds(1), _context.Time, cancellationToken)));
                _disturbance = watch.Reason ?? await StateChangeAsync(cancellationToken);
                foreach (var copy in running.Where(c => !c.Task.IsCompleted))
                {
                    copy.Disk.BytesCopied = copy.Progress.BytesDone;
                }

                foreach (var copy in running.Where(c => c.Task.IsCompleted).ToList())
                {
                    running.Remove(copy);
                    var result = await copy.Task; // a failed copy throws here; the others are stopped below
                    copy.Disk.BytesCopied = result.BytesCopied;
                    copy.Disk.BytesTotal = Math.Max(copy.Disk.BytesTotal, result.BytesCopied);
                    copy.Disk.Sha256 = null; // read back from the copy by the verify step
                    copy.Disk.DataSha256 = result.DataSha256;
                    copy.Disk.Copied = true;
                    copy.Activity?.SetTag("bytes", result.BytesCopied);
                    copy.Activity?.Dispose();
                    Telemetry.BytesCopied.Add(result.BytesCopied, new TagList { { "host", _context.Host }, { "vm", _context.Vm } });
                    _records.Add(BackupStep.Copying, $"{copy.Disk.Target}: {result.BytesCopied} bytes in {result.Duration.TotalMilliseconds:F0} ms");
                    _steps.Reached(Copy, DiskCopied, run.Disks.Count(d => d.Copied), run.Disks.Count);
                }

                await _records.NoteLiveChangeAsync(cancellationToken);
            }
        }
        finally
        {
            // Disturbed, failed or cancelled: stop the copies still running; each deletes its partial file.
            if (running.Count > 0)
            {
                await stop.CancelAsync();
                foreach (var copy in running)
                {
                    await copy.Task.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Current);
                    copy.Activity?.Dispose();
                }
            }
        }

        // After the copy: still off, no start seen, and no image written (a start and stop between two looks, or events
        // lost with a dropped connection, still leave the images' write times moved).
        _disturbance ??= watch.Reason ?? await StateChangeAsync(cancellationToken) ?? ChangedImages(before);
        if (_disturbance is not null)
        {
            LogCopyDisturbed(_context.Logger, _context.VmKey, run.RunId, _disturbance);
            run.Error = _disturbance;
            await DeleteCopiesAsync(cancellationToken);
            _records.Add(BackupStep.Copying, $"{_disturbance}: the copy was discarded");
            await _records.NoteLiveChangeAsync(cancellationToken);
            return;
        }

        run.Error = null;
        await _records.PersistAsync(BackupStep.Verifying, null, cancellationToken);
    }

    // The VM's own image, opened read-only, exactly as the live method copies its frozen base: the same files in the
    // set, restored the same way.
    private LiveBackupWorkflow.DiskCopy StartCopy(BackupDiskState disk, CancellationToken cancellationToken) =>
        LiveBackupWorkflow.StartDiskCopy(_context, _run, disk, "offline", cancellationToken);

    /// <summary>The copies of this run's disks deleted (an earlier attempt's, or this one's when it was disturbed).</summary>
    private async Task DeleteCopiesAsync(CancellationToken cancellationToken)
    {
        foreach (var disk in _run.Disks)
        {
            if (await Hypervisor.Images.ExistsAsync(disk.BackupPath, cancellationToken))
            {
                await Hypervisor.Images.DeleteAsync(disk.BackupPath, cancellationToken);
            }

            disk.Copied = false;
            disk.BytesCopied = 0;
            disk.DataSha256 = null;
        }
    }

    /// <summary>Null while the domain is still off; otherwise what it is now.</summary>
    private async Task<string?> StateChangeAsync(CancellationToken cancellationToken)
    {
        var domain = await Hypervisor.GetDomainAsync(DomainName, cancellationToken);
        return IsOff(domain.State) ? null : $"the VM was started during the offline copy (now {domain.State})";
    }

    /// <summary>Write time and length of every image the copy reads (a file the driver does not keep on disk: none).</summary>
    private Dictionary<string, (DateTime Written, long Length)?> Stamps()
    {
        var stamps = new Dictionary<string, (DateTime, long)?>(StringComparer.Ordinal);
        foreach (var path in _run.Disks.SelectMany(d => d.BackingChain.Select(l => l.Path).Prepend(d.BasePath)))
        {
            var file = new FileInfo(path);
            stamps[path] = file.Exists ? (file.LastWriteTimeUtc, file.Length) : null;
        }

        return stamps;
    }

    private string? ChangedImages(Dictionary<string, (DateTime Written, long Length)?> before)
    {
        var changed = Stamps().Where(s => before.GetValueOrDefault(s.Key) != s.Value).Select(s => s.Key).ToList();
        return changed.Count == 0 ? null : $"the VM's images were written during the offline copy ({string.Join(", ", changed)})";
    }

    // ---- Going on live -------------------------------------------------------------------------------------------

    /// <summary>
    /// The VM started during the copy and runs (or is paused) now: the same run goes on with the live method, under the
    /// same lock and into the same set (its copies were deleted). Persisted as the live method's first intent, so a
    /// crash from here on resumes live. False when the VM is not live-capable now (off again: copied again).
    /// </summary>
    private async Task<bool> HandOverToLiveAsync(CancellationToken cancellationToken)
    {
        var domain = await Hypervisor.GetDomainAsync(DomainName, cancellationToken);
        if (!LiveBackupWorkflow.CanRunLive(domain.State))
        {
            return false;
        }

        foreach (var disk in _run.Disks)
        {
            disk.OverlayPath = DiskOverlays.OverlayPathFor(disk.BasePath, _run.RunId);
            disk.Committed = false;
        }

        _run.Method = BackupMethod.Live;
        _run.QuiesceOutcome = "off";
        _run.Error = null;
        _steps.Discharge(DeleteSet); // the live workflow owns the set from here
        await _records.PersistAsync(BackupStep.Quiesce, $"{_disturbance}: the offline copy was discarded; backing the VM up live instead", cancellationToken);
        LogHandedOverToLive(_context.Logger, _context.VmKey, _run.RunId, domain.State);
        return true;
    }

    // ---- Observing its own steps ---------------------------------------------------------------------------------

    void IStepObserver.AttemptFailed(string step, int attempt, Exception error)
    {
        _run.Error = error.Message;
        LogStepFailed(_context.Logger, _context.VmKey, _run.RunId, step, attempt, error.Message);
    }

    private void Tag(Activity? activity)
    {
        activity?.SetTag("host", _context.Host);
        activity?.SetTag("vm", _context.Vm);
        activity?.SetTag("run", _run.RunId);
        activity?.SetTag("method", "offline");
    }

    /// <summary>
    /// The domain's lifecycle events while the copy runs (raised on the driver's event thread): any event but a
    /// (re)definition or a stop means a QEMU ran it, and may have written its images.
    /// </summary>
    private sealed class StartWatch : IDisposable
    {
        private readonly IHypervisor _hypervisor;
        private readonly string _domain;
        private readonly TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private string? _reason;

        public StartWatch(IHypervisor hypervisor, string domain)
        {
            _hypervisor = hypervisor;
            _domain = domain;
            hypervisor.DomainEvent += OnEvent;
        }

        public Task Started => _started.Task;

        public string? Reason => Volatile.Read(ref _reason);

        public void Dispose() => _hypervisor.DomainEvent -= OnEvent;

        private void OnEvent(object? sender, DomainEvent e)
        {
            if (e.Kind != DomainEventKind.Lifecycle || e.Domain != _domain
                || e.Lifecycle is LifecycleEventType.Defined or LifecycleEventType.Undefined or LifecycleEventType.Stopped or LifecycleEventType.Shutdown)
            {
                return;
            }

            Interlocked.CompareExchange(ref _reason, $"the VM was started during the offline copy ({e.Lifecycle} event at {e.At:HH:mm:ss.fff})", null);
            _started.TrySetResult();
        }
    }
}
