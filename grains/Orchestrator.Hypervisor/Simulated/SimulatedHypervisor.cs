using System.Security.Cryptography;
using System.Text;

namespace Orchestrator.Hypervisor.Simulated;

/// <summary>
/// An in-memory hypervisor host: domains, disks with backing chains, overlays, block jobs and internal snapshots,
/// with configurable timings and fault injection. For unit tests, the demo and the fleet-scale benchmark; it
/// never stands in for the real libvirt tests.
/// </summary>
public sealed partial class SimulatedHypervisor : IHypervisor
{
    private readonly Lock _lock = new();
    private long _memoryKiB;
    private int _cpus;
    private readonly Dictionary<string, SimDomain> _domains = new(StringComparer.Ordinal);
    private readonly Dictionary<string, SimImage> _files = new(StringComparer.Ordinal);
    private readonly Dictionary<SimulatedOperation, Queue<Exception>> _faults = [];
    private readonly TimeProvider _time;

    public SimulatedHypervisor(SimulatedOptions? options = null, TimeProvider? timeProvider = null)
    {
        Options = options ?? new SimulatedOptions();
        _time = timeProvider ?? TimeProvider.System;
        Uri = $"simulated://{Options.HostName}";
        Images = new SimulatedDiskImages(this);
        _memoryKiB = Options.MemoryKiB;
        _cpus = Options.Cpus;
    }

    public SimulatedOptions Options { get; }

    /// <summary>The most image copies that ran at the same time on this host since the last <see cref="ResetCopyStats"/>.</summary>
    public int MaxConcurrentCopies => Volatile.Read(ref _maxCopies);

    private int _copies;
    private int _maxCopies;

    /// <summary>Bit rot in a stored image: its bytes change, so a checksum taken from it now differs from one recorded before.</summary>
    public void CorruptImage(string path)
    {
        lock (_lock)
        {
            (_files.TryGetValue(path, out var image) ? image : throw new HypervisorException(HypervisorErrorKind.FileNotFound, $"no image '{path}'")).Touch();
        }
    }

    public void ResetCopyStats() => Volatile.Write(ref _maxCopies, Volatile.Read(ref _copies));

    private int _corruptCopies;

    /// <summary>The next <paramref name="times"/> copies write content other than what they read (and report).</summary>
    public void CorruptNextCopies(int times = 1)
    {
        lock (_lock)
        {
            _corruptCopies += times;
        }
    }

    public string Uri { get; }

    public IDiskImages Images { get; }

    public event EventHandler<DomainEvent>? DomainEvent;

    /// <summary>The next <paramref name="times"/> calls of <paramref name="operation"/> throw <paramref name="error"/>.</summary>
    public void InjectFault(SimulatedOperation operation, Exception? error = null, int times = 1)
    {
        lock (_lock)
        {
            if (!_faults.TryGetValue(operation, out var queue))
            {
                _faults[operation] = queue = new Queue<Exception>();
            }

            for (var i = 0; i < times; i++)
            {
                queue.Enqueue(error ?? new HypervisorException(HypervisorErrorKind.OperationFailed, $"injected fault in {operation}"));
            }
        }
    }

    /// <summary>Drops every fault not yet thrown.</summary>
    public void ClearFaults()
    {
        lock (_lock)
        {
            _faults.Clear();
        }
    }

    /// <summary>Adds a domain whose disks are new images (base format per disk) under <paramref name="imageDir"/>.</summary>
    public DomainInfo AddDomain(
        string name,
        DomainPowerState state,
        IEnumerable<(string Target, string Format, long SizeBytes)> disks,
        IReadOnlyDictionary<string, string>? labels = null,
        string? imageDir = null,
        Guid? uuid = null)
    {
        lock (_lock)
        {
            if (_domains.ContainsKey(name))
            {
                throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"domain '{name}' already exists");
            }

            var domain = new SimDomain(name, uuid ?? StableUuid(Options.HostName, name)) { State = state, Labels = labels ?? new Dictionary<string, string>() };
            foreach (var (target, format, size) in disks)
            {
                var path = $"{(imageDir ?? Options.ImageDirectory).TrimEnd('/')}/{name}-{target}.{format}";
                _files[path] = new SimImage(path, format, size) { Allocated = size / 4 };
                WriteFile(_files[path]);
                domain.Disks.Add(new SimDisk(target, [path]));
            }

            _domains[name] = domain;
            return Snapshot(domain);
        }
    }

    /// <summary>Names <paramref name="path"/> as the domain's NVRAM file in its XML (null: none); the file itself is real.</summary>
    public void SetNvram(string domain, string? path)
    {
        lock (_lock)
        {
            Find(domain).Nvram = path;
        }
    }

    /// <summary>
    /// Test aid for a backup root shared between hosts: <paramref name="other"/> sees the image at
    /// <paramref name="path"/> as this host has it (same content), as through a shared mount.
    /// </summary>
    public void ShareImageWith(SimulatedHypervisor other, string path)
    {
        ArgumentNullException.ThrowIfNull(other);
        SimImage image;
        lock (_lock)
        {
            image = _files[path];
        }

        lock (other._lock)
        {
            other._files[path] = new SimImage(path, image.Format, image.VirtualSize) { Allocated = image.Allocated, ContentId = image.ContentId, Backing = image.Backing, BackingEntry = image.BackingEntry, BackingFormatEntry = image.BackingFormatEntry };
        }
    }

    /// <summary>The NVRAM file the domain's definition names, or null.</summary>
    public string? NvramOf(string domain)
    {
        lock (_lock)
        {
            return Find(domain).Nvram;
        }
    }

    /// <summary>
    /// Makes the active image of a disk a linked clone of <paramref name="templatePath"/> (created if absent, shared when
    /// several disks name it): the disk's chain becomes clone -> template, as after
    /// <c>qemu-img create -f qcow2 -b template -F qcow2 clone</c>.
    /// </summary>
    public void LinkToTemplate(string domain, string target, string templatePath, string templateFormat = "qcow2")
    {
        lock (_lock)
        {
            var disk = FindDisk(Find(domain), target);
            var bottom = _files[disk.Chain[^1]];
            if (bottom.Format != "qcow2")
            {
                throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"'{bottom.Path}' is {bottom.Format}: only a qcow2 image can have a backing file");
            }

            if (!_files.TryGetValue(templatePath, out var template))
            {
                _files[templatePath] = template = new SimImage(templatePath, templateFormat, bottom.VirtualSize) { Allocated = bottom.VirtualSize / 8 };
                WriteFile(template);
            }

            bottom.Backing = template.Path;
            disk.Chain.Add(template.Path);
            WriteFile(bottom);
        }
    }

    /// <summary>Seeds the demo VMs: qcow2 and raw disks, running and shut off; web-1's vda is a linked clone of a template.</summary>
    public SimulatedHypervisor SeedDemo()
    {
        const long GiB = 1L << 30;
        AddDomain("web-1", DomainPowerState.Running, [("vda", "qcow2", 20 * GiB), ("vdb", "raw", 4 * GiB)], new Dictionary<string, string> { ["tier"] = "web", ["env"] = "prod" });
        LinkToTemplate("web-1", "vda", $"{Options.ImageDirectory.TrimEnd('/')}/templates/debian-12.qcow2");
        AddDomain("web-2", DomainPowerState.Running, [("vda", "qcow2", 20 * GiB)], new Dictionary<string, string> { ["tier"] = "web", ["env"] = "prod" });
        AddDomain("db-1", DomainPowerState.Running, [("vda", "qcow2", 40 * GiB), ("vdb", "qcow2", 100 * GiB)], new Dictionary<string, string> { ["tier"] = "db", ["env"] = "prod" });
        AddDomain("legacy-1", DomainPowerState.Running, [("vda", "raw", 10 * GiB)], new Dictionary<string, string> { ["tier"] = "legacy" });
        AddDomain("build-1", DomainPowerState.ShutOff, [("vda", "qcow2", 30 * GiB)], new Dictionary<string, string> { ["env"] = "dev" });
        return this;
    }

    /// <summary>
    /// Seeds a fleet of <paramref name="count"/> running VMs vm-00001... (labels fleet=scale, tier=web for odd numbers
    /// and tier=db for even ones), each with two qcow2 disks of <paramref name="diskSizeBytes"/>: vda a linked clone of
    /// the host's shared template (a 2-image chain), vdb standalone.
    /// </summary>
    public SimulatedHypervisor SeedFleet(int count, long diskSizeBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(diskSizeBytes);
        var template = $"{Options.ImageDirectory.TrimEnd('/')}/templates/fleet-base.qcow2";
        for (var i = 1; i <= count; i++)
        {
            var name = FleetVmName(i);
            var labels = new Dictionary<string, string> { ["fleet"] = "scale", ["tier"] = i % 2 == 1 ? "web" : "db" };
            AddDomain(name, DomainPowerState.Running, [("vda", "qcow2", diskSizeBytes), ("vdb", "qcow2", diskSizeBytes)], labels);
            LinkToTemplate(name, "vda", template);
        }

        return this;
    }

    /// <summary>The name of the <paramref name="index"/>th (1-based) VM of <see cref="SeedFleet"/>: vm-00001.</summary>
    public static string FleetVmName(int index) => $"vm-{index:00000}";

    /// <summary>
    /// Simulates guest writes: the active image of every disk of a running domain changes content, and every dirty
    /// bitmap of it counts <paramref name="bytes"/> more written (at most the disk's size).
    /// </summary>
    public void SimulateGuestWrites(string domain, long bytes = 1024 * 1024)
    {
        lock (_lock)
        {
            var d = Find(domain);
            foreach (var disk in d.Disks)
            {
                var image = _files[disk.Chain[0]];
                image.Touch();
                foreach (var bitmap in image.Bitmaps.Keys.ToList())
                {
                    image.Bitmaps[bitmap] = Math.Min(image.VirtualSize, image.Bitmaps[bitmap] + bytes);
                }
            }
        }
    }

    /// <summary>
    /// Simulates QEMU killed (SIGKILL) after checkpoints were made at runtime: the dirty bitmaps were never stored in the
    /// images, while libvirt's checkpoint records remain (an incremental from them is refused as CheckpointNotFound).
    /// </summary>
    public void SimulateBitmapLoss(string domain)
    {
        lock (_lock)
        {
            foreach (var disk in Find(domain).Disks)
            {
                _files[disk.Chain[0]].Bitmaps.Clear();
            }
        }
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    /// <summary>With <see cref="SimulatedOptions.WriteImageFiles"/>: the image's file on disk (called under the lock).</summary>
    private void WriteFile(SimImage image, FilePrivacy? privacy = null)
    {
        if (!Options.WriteImageFiles)
        {
            return;
        }

        var backingFormat = image.Backing is { } b && _files.TryGetValue(b, out var below) ? below.Format : null;
        try
        {
            SimulatedImageFiles.Write(image.Path, image.Format, image.VirtualSize, image.Allocated, image.Backing, backingFormat, privacy ?? FilePrivacy.Private);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new HypervisorException(HypervisorErrorKind.OperationFailed, $"cannot write the simulated image file '{image.Path}': {e.Message}", inner: e);
        }
    }

    /// <summary>With <see cref="SimulatedOptions.WriteImageFiles"/>: removes the image's file (called under the lock).</summary>
    private void DeleteFile(string path)
    {
        if (Options.WriteImageFiles)
        {
            SimulatedImageFiles.Delete(path);
        }
    }

    public async Task<HypervisorFacts> GetFactsAsync(CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        return new HypervisorFacts(Options.HostName, Uri, "simulated", "9.0.0", "7.2.0");
    }

    /// <summary>
    /// The machine's memory and CPUs (<see cref="SimulatedOptions.MemoryKiB"/>, <see cref="SimulatedOptions.Cpus"/>,
    /// changed by <see cref="SetCapacity"/>); free memory is the memory minus that of every running domain.
    /// </summary>
    public async Task<NodeCapacity> GetCapacityAsync(CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        lock (_lock)
        {
            var used = _domains.Values.Where(d => d.State is DomainPowerState.Running or DomainPowerState.Paused or DomainPowerState.Blocked).Sum(d => d.MemoryKiB);
            return new NodeCapacity(_memoryKiB, Math.Max(0, _memoryKiB - used), _cpus);
        }
    }

    /// <summary>Test aid: the machine's memory and CPUs from now on.</summary>
    public void SetCapacity(long memoryKiB, int cpus)
    {
        lock (_lock)
        {
            _memoryKiB = memoryKiB;
            _cpus = cpus;
        }
    }

    public async Task<IReadOnlyList<DomainInfo>> ListDomainsAsync(CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        lock (_lock)
        {
            ThrowIfFaulted(SimulatedOperation.ListDomains);
            return [.. _domains.Values.OrderBy(d => d.Name, StringComparer.Ordinal).Select(Snapshot)];
        }
    }

    public async Task<DomainInfo> GetDomainAsync(string domain, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        lock (_lock)
        {
            ThrowIfFaulted(SimulatedOperation.GetDomain);
            return Snapshot(Find(domain));
        }
    }

    public async Task<string> GetDomainXmlAsync(string domain, bool inactive = false, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        lock (_lock)
        {
            var found = Find(domain);
            return SimulatedDomainXml.Write(Snapshot(found), found.Nvram);
        }
    }

    public async Task<string> DefineDomainAsync(string xml, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        var parsed = SimulatedDomainXml.Read(xml);
        lock (_lock)
        {
            if (_domains.TryGetValue(parsed.Name, out var existing))
            {
                if (existing.Uuid != parsed.Uuid)
                {
                    throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"domain '{parsed.Name}' already exists with uuid {existing.Uuid}");
                }

                existing.Disks.Clear();
                existing.Disks.AddRange(parsed.Disks.Select(d => new SimDisk(d.Target, [d.SourcePath, .. d.BackingChain.Select(l => l.Path)])));
                existing.Labels = parsed.Labels;
            }
            else
            {
                if (_domains.Values.Any(d => d.Uuid == parsed.Uuid))
                {
                    throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"uuid {parsed.Uuid} is already in use");
                }

                var created = new SimDomain(parsed.Name, parsed.Uuid) { State = DomainPowerState.ShutOff, Labels = parsed.Labels, MemoryKiB = parsed.MemoryKiB, VirtualCpus = parsed.VirtualCpus, Nvram = SimulatedDomainXml.NvramOf(xml) };
                created.Disks.AddRange(parsed.Disks.Select(d => new SimDisk(d.Target, [d.SourcePath, .. d.BackingChain.Select(l => l.Path)])));
                _domains[parsed.Name] = created;
            }
        }

        Raise(new DomainEvent(parsed.Name, DomainEventKind.Lifecycle, _time.GetUtcNow(), LifecycleEventType.Defined));
        return parsed.Name;
    }

    public async Task UndefineDomainAsync(string domain, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        lock (_lock)
        {
            var d = Find(domain);
            if (d.State != DomainPowerState.ShutOff)
            {
                throw new HypervisorException(HypervisorErrorKind.InvalidDomainState, $"domain '{domain}' is active; destroy it first");
            }

            _domains.Remove(domain);
        }

        Raise(new DomainEvent(domain, DomainEventKind.Lifecycle, _time.GetUtcNow(), LifecycleEventType.Undefined));
    }

    public Task StartDomainAsync(string domain, bool paused = false, CancellationToken cancellationToken = default) =>
        ChangeStateAsync(domain, from: [DomainPowerState.ShutOff, DomainPowerState.Crashed], to: paused ? DomainPowerState.Paused : DomainPowerState.Running, LifecycleEventType.Started, cancellationToken);

    public Task DestroyDomainAsync(string domain, CancellationToken cancellationToken = default) =>
        ChangeStateAsync(domain, from: [DomainPowerState.Running, DomainPowerState.Paused, DomainPowerState.Blocked, DomainPowerState.ShuttingDown], to: DomainPowerState.ShutOff, LifecycleEventType.Stopped, cancellationToken);

    public Task SuspendDomainAsync(string domain, CancellationToken cancellationToken = default) =>
        ChangeStateAsync(domain, from: [DomainPowerState.Running], to: DomainPowerState.Paused, LifecycleEventType.Suspended, cancellationToken);

    public Task ResumeDomainAsync(string domain, CancellationToken cancellationToken = default) =>
        ChangeStateAsync(domain, from: [DomainPowerState.Paused], to: DomainPowerState.Running, LifecycleEventType.Resumed, cancellationToken);

    public async Task CreateExternalSnapshotAsync(string domain, IReadOnlyList<OverlaySpec> overlays, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.SnapshotLatency, cancellationToken);
        lock (_lock)
        {
            ThrowIfFaulted(SimulatedOperation.CreateExternalSnapshot);
            var d = Find(domain);
            if (overlays.Count == 0)
            {
                throw new HypervisorException(HypervisorErrorKind.InvalidArgument, "no overlays given");
            }

            // As the libvirt driver (contract suite): a disk or an overlay path named twice, or a relative overlay
            // path, is refused before anything changes (it used to stack two overlays on one disk).
            if (overlays.Select(o => o.Target).Distinct(StringComparer.Ordinal).Count() != overlays.Count
                || overlays.Select(o => o.OverlayPath).Distinct(StringComparer.Ordinal).Count() != overlays.Count)
            {
                throw new HypervisorException(HypervisorErrorKind.InvalidArgument, "each disk and each overlay path may appear only once");
            }

            if (overlays.FirstOrDefault(o => !Path.IsPathFullyQualified(o.OverlayPath)) is { } relative)
            {
                throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"overlay path must be absolute: {relative.OverlayPath}");
            }

            // Validate everything first: the snapshot is atomic across disks.
            foreach (var spec in overlays)
            {
                var disk = FindDisk(d, spec.Target);
                if (_files.ContainsKey(spec.OverlayPath))
                {
                    throw new HypervisorException(HypervisorErrorKind.FileExists, $"overlay '{spec.OverlayPath}' already exists");
                }

                if (d.Jobs.ContainsKey(disk.Target))
                {
                    throw new HypervisorException(HypervisorErrorKind.BlockJobActive, $"disk '{disk.Target}' of '{domain}' has a block job");
                }
            }

            foreach (var spec in overlays)
            {
                var disk = FindDisk(d, spec.Target);
                var below = _files[disk.Chain[0]];
                _files[spec.OverlayPath] = new SimImage(spec.OverlayPath, "qcow2", below.VirtualSize) { Backing = below.Path, Allocated = 196_616 };
                WriteFile(_files[spec.OverlayPath]);
                disk.Chain.Insert(0, spec.OverlayPath);
            }
        }
    }

    public async Task<BlockJobInfo?> GetBlockJobAsync(string domain, string target, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        lock (_lock)
        {
            var d = Find(domain);
            FindDisk(d, target);
            RequireActive(d, "block job info");
            return d.Jobs.TryGetValue(target, out var job) ? job.Info(target) : null;
        }
    }

    public async Task StartActiveCommitAsync(string domain, string target, string? basePath, long bandwidthBytesPerSecond = 0, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        SimJob job;
        lock (_lock)
        {
            ThrowIfFaulted(SimulatedOperation.StartActiveCommit);
            var d = Find(domain);
            var disk = FindDisk(d, target);
            if (!d.IsActive)
            {
                throw new HypervisorException(HypervisorErrorKind.InvalidDomainState, $"domain '{domain}' is not running");
            }

            if (disk.Chain.Count < 2)
            {
                throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"disk '{target}' of '{domain}' has no backing image to commit into");
            }

            if (d.Jobs.ContainsKey(target))
            {
                throw new HypervisorException(HypervisorErrorKind.BlockJobActive, $"disk '{target}' of '{domain}' already has a block job");
            }

            // As libvirt: no base is the deepest image of the chain (everything above it merges into it); a base
            // given (the drivers pass SHALLOW with it) must be the image right below the top.
            if (basePath is not null && basePath != disk.Chain[1])
            {
                throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"'{basePath}' is not the image right below '{disk.Chain[0]}' on '{target}' of '{domain}'");
            }

            job = new SimJob(_files[disk.Chain[0]].Allocated) { Base = basePath ?? disk.Chain[^1] };
            d.Jobs[target] = job;
        }

        _ = CompleteLaterAsync();

        async Task CompleteLaterAsync()
        {
            await Task.Delay(Options.CommitReadyLatency, _time, CancellationToken.None);
            lock (_lock)
            {
                if (!_domains.TryGetValue(domain, out var d) || !d.Jobs.TryGetValue(target, out var current) || current != job)
                {
                    return;
                }

                job.Current = job.End;
                job.Ready = true;
            }

            job.ReadySignal.TrySetResult();
            Raise(new DomainEvent(domain, DomainEventKind.BlockJob, _time.GetUtcNow(), Target: target, Job: BlockJobKind.ActiveCommit, Status: BlockJobEventStatus.Ready));
        }
    }

    public async Task WaitForBlockJobReadyAsync(string domain, string target, CancellationToken cancellationToken = default)
    {
        SimJob job;
        lock (_lock)
        {
            ThrowIfFaulted(SimulatedOperation.WaitForBlockJobReady);
            var d = Find(domain);
            FindDisk(d, target);
            RequireActive(d, "block job wait");
            if (!d.Jobs.TryGetValue(target, out job!))
            {
                throw new HypervisorException(HypervisorErrorKind.NoBlockJob, $"disk '{target}' of '{domain}' has no block job");
            }
        }

        await job.ReadySignal.Task.WaitAsync(cancellationToken);
    }

    public async Task PivotAsync(string domain, string target, CancellationToken cancellationToken = default)
    {
        lock (_lock)
        {
            ThrowIfFaulted(SimulatedOperation.Pivot);
            var d = Find(domain);
            FindDisk(d, target);
            RequireActive(d, "pivot");
            if (!d.Jobs.TryGetValue(target, out var job))
            {
                throw new HypervisorException(HypervisorErrorKind.NoBlockJob, $"disk '{target}' of '{domain}' has no block job");
            }

            if (!job.Ready)
            {
                throw new HypervisorException(HypervisorErrorKind.InvalidDomainState, $"block job on '{target}' of '{domain}' is not ready to pivot");
            }
        }

        await DelayAsync(Options.PivotLatency, cancellationToken);
        lock (_lock)
        {
            var d = Find(domain);
            var disk = FindDisk(d, target);
            d.Jobs.Remove(target, out var job);
            var top = _files[disk.Chain[0]];

            // Every image above the job's base is merged into it and leaves the chain; the base now runs.
            var baseIndex = disk.Chain.IndexOf(job!.Base);
            _files[job.Base].Touch();
            disk.Chain.RemoveRange(0, baseIndex);
            top.Backing = null;
        }

        Raise(new DomainEvent(domain, DomainEventKind.BlockJob, _time.GetUtcNow(), Target: target, Job: BlockJobKind.ActiveCommit, Status: BlockJobEventStatus.Completed));
    }

    public async Task AbortBlockJobAsync(string domain, string target, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        lock (_lock)
        {
            ThrowIfFaulted(SimulatedOperation.AbortBlockJob);
            var d = Find(domain);
            FindDisk(d, target);
            RequireActive(d, "block job abort");
            if (!d.Jobs.Remove(target, out var job))
            {
                throw new HypervisorException(HypervisorErrorKind.NoBlockJob, $"disk '{target}' of '{domain}' has no block job");
            }

            job.ReadySignal.TrySetException(new HypervisorException(HypervisorErrorKind.BlockJobFailed, "block job was aborted"));
        }

        Raise(new DomainEvent(domain, DomainEventKind.BlockJob, _time.GetUtcNow(), Target: target, Job: BlockJobKind.ActiveCommit, Status: BlockJobEventStatus.Canceled));
    }

    public async Task<InternalSnapshotInfo> CreateInternalSnapshotAsync(string domain, string name, string? description = null, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        bool running;
        lock (_lock)
        {
            ThrowIfFaulted(SimulatedOperation.CreateInternalSnapshot);
            var d = Find(domain);
            var raw = d.Disks.FirstOrDefault(disk => _files[disk.Chain[0]].Format != "qcow2");
            if (raw is not null)
            {
                throw new HypervisorException(
                    HypervisorErrorKind.UnsupportedDiskFormat,
                    $"disk '{raw.Target}' of '{domain}' is {_files[raw.Chain[0]].Format}: internal checkpoints need qcow2; use a live backup, or convert the disk");
            }

            if (d.Snapshots.Any(s => s.Info.Name == name))
            {
                throw new HypervisorException(HypervisorErrorKind.SnapshotExists, $"snapshot '{name}' of '{domain}' already exists");
            }

            running = d.State == DomainPowerState.Running;
        }

        if (running)
        {
            Raise(new DomainEvent(domain, DomainEventKind.Lifecycle, _time.GetUtcNow(), LifecycleEventType.Suspended));
            await DelayAsync(Options.InternalSnapshotPause, CancellationToken.None);
        }

        InternalSnapshotInfo info;
        lock (_lock)
        {
            var d = Find(domain);
            info = new InternalSnapshotInfo(name, _time.GetUtcNow(), running, d.State, description);
            d.Snapshots.Add(new SimSnapshot(info, d.Disks.ToDictionary(disk => disk.Target, disk => _files[disk.Chain[0]].ContentId)));
            for (var i = 0; i < d.Disks.Count; i++)
            {
                // Like QEMU: the memory state goes into the first disk (about half the guest's RAM for a small guest).
                _files[d.Disks[i].Chain[0]].Snapshots.Add(info with { VmStateSize = running && i == 0 ? d.MemoryKiB * 1024 / 2 : 0 });
            }
        }

        if (running)
        {
            Raise(new DomainEvent(domain, DomainEventKind.Lifecycle, _time.GetUtcNow(), LifecycleEventType.Resumed));
        }

        return info;
    }

    public async Task<IReadOnlyList<InternalSnapshotInfo>> ListInternalSnapshotsAsync(string domain, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        lock (_lock)
        {
            return [.. Find(domain).Snapshots.Select(s => s.Info)];
        }
    }

    public async Task RevertInternalSnapshotAsync(string domain, string name, RevertTarget target = RevertTarget.AsSaved, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        LifecycleEventType? lifecycle;
        lock (_lock)
        {
            ThrowIfFaulted(SimulatedOperation.RevertInternalSnapshot);
            var d = Find(domain);
            var snapshot = d.Snapshots.FirstOrDefault(s => s.Info.Name == name)
                ?? throw new HypervisorException(HypervisorErrorKind.SnapshotNotFound, $"snapshot '{name}' of '{domain}' does not exist");
            foreach (var disk in d.Disks)
            {
                if (snapshot.Content.TryGetValue(disk.Target, out var content))
                {
                    _files[disk.Chain[0]].ContentId = content;
                }
            }

            var newState = target switch
            {
                RevertTarget.Running => DomainPowerState.Running,
                RevertTarget.Paused => DomainPowerState.Paused,
                _ => snapshot.Info.HasMemory ? snapshot.Info.StateAtSnapshot : DomainPowerState.ShutOff,
            };
            lifecycle = newState == d.State ? null : newState switch
            {
                DomainPowerState.Running => LifecycleEventType.Started,
                DomainPowerState.Paused => LifecycleEventType.Suspended,
                _ => LifecycleEventType.Stopped,
            };
            d.State = newState;
        }

        if (lifecycle is { } type)
        {
            Raise(new DomainEvent(domain, DomainEventKind.Lifecycle, _time.GetUtcNow(), type));
        }
    }

    public async Task DeleteInternalSnapshotAsync(string domain, string name, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        lock (_lock)
        {
            ThrowIfFaulted(SimulatedOperation.DeleteInternalSnapshot);
            var d = Find(domain);
            var snapshot = d.Snapshots.FirstOrDefault(s => s.Info.Name == name)
                ?? throw new HypervisorException(HypervisorErrorKind.SnapshotNotFound, $"snapshot '{name}' of '{domain}' does not exist");
            d.Snapshots.Remove(snapshot);
            foreach (var image in _files.Values)
            {
                image.Snapshots.RemoveAll(s => s.Name == name && s.CreatedAt == snapshot.Info.CreatedAt);
            }
        }
    }

    public async Task<int> FreezeFileSystemsAsync(string domain, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        lock (_lock)
        {
            ThrowIfFaulted(SimulatedOperation.Freeze);
            var d = Find(domain);
            RequireActive(d, "file system freeze");
            if (!d.HasGuestAgent)
            {
                throw new HypervisorException(HypervisorErrorKind.AgentUnavailable, $"QEMU guest agent is not configured or not responding in '{domain}'");
            }

            d.Frozen = true;
            return d.Disks.Count;
        }
    }

    public async Task<int> ThawFileSystemsAsync(string domain, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        lock (_lock)
        {
            ThrowIfFaulted(SimulatedOperation.Thaw);
            var d = Find(domain);
            RequireActive(d, "file system thaw");
            if (!d.HasGuestAgent)
            {
                throw new HypervisorException(HypervisorErrorKind.AgentUnavailable, $"QEMU guest agent is not configured or not responding in '{domain}'");
            }

            var was = d.Frozen;
            d.Frozen = false;
            return was ? d.Disks.Count : 0;
        }
    }

    /// <summary>
    /// A running simulated guest's agent answers (a domain defined by a restore boots an ideal guest); faults come from
    /// <see cref="SimulatedOperation.GuestAgent"/>.
    /// </summary>
    public async Task PingGuestAgentAsync(string domain, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        lock (_lock)
        {
            ThrowIfFaulted(SimulatedOperation.GuestAgent);
            RequireActive(Find(domain), "guest agent ping");
        }
    }

    /// <summary>Simulated guest-exec: exit code 0, or the number after "exit " in the last argument (e.g. "exit 3").</summary>
    public async Task<GuestCommandResult> RunGuestCommandAsync(string domain, string path, IReadOnlyList<string> arguments, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        await DelayAsync(Options.CallLatency, cancellationToken);
        lock (_lock)
        {
            ThrowIfFaulted(SimulatedOperation.GuestAgent);
            RequireActive(Find(domain), "guest command");
        }

        var last = arguments.Count > 0 ? arguments[^1] : path;
        return new GuestCommandResult(last.StartsWith("exit ", StringComparison.Ordinal) && int.TryParse(last[5..], out var code) ? code : 0, string.Empty);
    }

    public async Task<string?> ReadConsoleAsync(string domain, int maxBytes, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        lock (_lock)
        {
            return Find(domain).IsActive ? Options.ConsoleText : string.Empty;
        }
    }

    /// <summary>Gives a domain a responding guest agent (for quiesce).</summary>
    public void SetGuestAgent(string domain, bool present)
    {
        lock (_lock)
        {
            Find(domain).HasGuestAgent = present;
        }
    }

    private async Task ChangeStateAsync(string domain, DomainPowerState[] from, DomainPowerState to, LifecycleEventType type, CancellationToken cancellationToken)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        lock (_lock)
        {
            var d = Find(domain);
            if (!from.Contains(d.State))
            {
                throw new HypervisorException(HypervisorErrorKind.InvalidDomainState, $"domain '{domain}' is {d.State}; cannot change to {to}");
            }

            d.State = to;
            if (to == DomainPowerState.ShutOff)
            {
                foreach (var job in d.Jobs.Values)
                {
                    job.ReadySignal.TrySetException(new HypervisorException(HypervisorErrorKind.BlockJobFailed, "domain stopped during the block job"));
                }

                d.Jobs.Clear();
            }
        }

        Raise(new DomainEvent(domain, DomainEventKind.Lifecycle, _time.GetUtcNow(), type));
    }

    /// <summary>The same host and name always give the same uuid, so a restarted demo host looks the same.</summary>
    private static Guid StableUuid(string host, string name)
    {
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes($"{host}/{name}"));
        hash[6] = (byte)((hash[6] & 0x0F) | 0x50);
        hash[8] = (byte)((hash[8] & 0x3F) | 0x80);
        return new Guid(hash.AsSpan(0, 16));
    }

    private void Raise(DomainEvent e) => DomainEvent?.Invoke(this, e);

    private void ThrowIfFaulted(SimulatedOperation operation)
    {
        if (_faults.TryGetValue(operation, out var queue) && queue.TryDequeue(out var error))
        {
            throw error;
        }
    }

    private async Task DelayAsync(TimeSpan delay, CancellationToken cancellationToken)
    {
        if (delay > TimeSpan.Zero)
        {
            await Task.Delay(delay, _time, cancellationToken);
        }
    }

    private SimDomain Find(string domain) =>
        _domains.TryGetValue(domain, out var d)
            ? d
            : throw new HypervisorException(HypervisorErrorKind.DomainNotFound, $"domain '{domain}' not found");

    /// <summary>
    /// Block-job and guest-agent calls on a shut-off domain fail as libvirt fails them ("domain is not running",
    /// VIR_ERR_OPERATION_INVALID), before any question about jobs or agents (contract suite: this used to answer
    /// "no block job" or "no agent").
    /// </summary>
    private static void RequireActive(SimDomain d, string what)
    {
        if (!d.IsActive)
        {
            throw new HypervisorException(HypervisorErrorKind.InvalidDomainState, $"{what} on '{d.Name}': domain is not running");
        }
    }

    private static SimDisk FindDisk(SimDomain d, string target) =>
        d.Disks.FirstOrDefault(disk => disk.Target == target)
            ?? throw new HypervisorException(HypervisorErrorKind.DiskNotFound, $"domain '{d.Name}' has no disk '{target}'");

    private DomainInfo Snapshot(SimDomain d) => new(
        d.Name,
        d.Uuid,
        d.State,
        [.. d.Disks.Select(disk => new DomainDisk(
            disk.Target,
            disk.Chain[0],
            _files[disk.Chain[0]].Format,
            [.. disk.Chain.Skip(1).Select(p => new DiskLayer(p, _files.TryGetValue(p, out var f) ? f.Format : "raw"))]))],
        new Dictionary<string, string>(d.Labels),
        d.MemoryKiB,
        d.VirtualCpus);

    private sealed class SimDomain(string name, Guid uuid)
    {
        public string Name { get; } = name;

        public Guid Uuid { get; } = uuid;

        public DomainPowerState State { get; set; }

        public bool IsActive => State is DomainPowerState.Running or DomainPowerState.Paused or DomainPowerState.Blocked;

        public List<SimDisk> Disks { get; } = [];

        public IReadOnlyDictionary<string, string> Labels { get; set; } = new Dictionary<string, string>();

        /// <summary>The NVRAM file the definition names (a real file of the test's choosing), or null.</summary>
        public string? Nvram { get; set; }

        public long MemoryKiB { get; init; } = 2 * 1024 * 1024;

        public int VirtualCpus { get; init; } = 2;

        public Dictionary<string, SimJob> Jobs { get; } = new(StringComparer.Ordinal);

        public List<SimSnapshot> Snapshots { get; } = [];

        public bool HasGuestAgent { get; set; }

        public bool Frozen { get; set; }

        /// <summary>libvirt's checkpoint metadata of the domain (the bitmaps themselves live in the images).</summary>
        public List<CheckpointInfo> Checkpoints { get; } = [];

        public SimBackupJob? BackupJob { get; set; }
    }

    /// <summary>A disk; Chain[0] is the active image, the last is the base.</summary>
    private sealed record SimDisk(string Target, List<string> Chain);

    private sealed record SimSnapshot(InternalSnapshotInfo Info, Dictionary<string, Guid> Content);

    private sealed class SimJob(long end)
    {
        /// <summary>The image the commit merges into.</summary>
        public string Base { get; init; } = "";

        public long Current { get; set; }

        public long End { get; } = end;

        public bool Ready { get; set; }

        public TaskCompletionSource ReadySignal { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public BlockJobInfo Info(string target) => new(target, BlockJobKind.ActiveCommit, Current, End, Ready);
    }

    internal sealed class SimImage(string path, string format, long virtualSize)
    {
        public string Path { get; } = path;

        public string Format { get; } = format;

        public long VirtualSize { get; } = virtualSize;

        public long Allocated { get; set; }

        public string? Backing { get; set; }

        /// <summary>The backing entry as last written into the header by <c>SetBackingAsync</c> (unresolved), and its format.</summary>
        public string? BackingEntry { get; set; }

        public string? BackingFormatEntry { get; set; }

        public Guid ContentId { get; set; } = Guid.NewGuid();

        public List<InternalSnapshotInfo> Snapshots { get; } = [];

        /// <summary>Persistent dirty bitmaps of a qcow2 image: name -> bytes the guest wrote since it was created.</summary>
        public Dictionary<string, long> Bitmaps { get; } = new(StringComparer.Ordinal);

        public void Touch() => ContentId = Guid.NewGuid();

        public string Sha256() => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes($"{Format}:{VirtualSize}:{Allocated}:{ContentId}")));

        public string DataSha256() => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes($"data:{Format}:{Allocated}:{ContentId}")));
    }
}
