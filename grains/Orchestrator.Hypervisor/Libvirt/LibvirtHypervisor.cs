using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Orchestrator.Hypervisor.Libvirt.Native;
using Orchestrator.Hypervisor.QemuImg;
using static Orchestrator.Hypervisor.Libvirt.Native.LibvirtConstants;

namespace Orchestrator.Hypervisor.Libvirt;

/// <summary>
/// <see cref="IHypervisor"/> over libvirt's C API (libvirt.so.0, P/Invoke; no virsh). One instance holds one connection.
/// Every libvirt call blocks, so each runs on a thread-pool thread, never on the caller's; libvirt connections are
/// thread-safe, so calls may overlap. Block-job and lifecycle events come from the process-wide
/// <see cref="LibvirtEventLoop"/> and complete the waits (no polling with sleeps).
/// </summary>
public sealed partial class LibvirtHypervisor : IHypervisor
{
    /// <summary>How long to wait for a block-job event before looking whether the job is gone anyway.</summary>
    private static readonly TimeSpan EventSafetyNet = TimeSpan.FromSeconds(10);

    private volatile ConnectHandle _conn;
    private readonly IDiskImages _images;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<(string Domain, string Target), BlockJobWatch> _watches = new();
    private int _lifecycleCallbackId = -1;
    private int _blockJobCallbackId = -1;
    private bool _closeCallbackRegistered;
    private volatile bool _connectionClosed;
    private int _disposed;

    private LibvirtHypervisor(string uri, ConnectHandle conn, IDiskImages images, ILogger logger)
    {
        Uri = uri;
        _conn = conn;
        _images = images;
        Images = new GuardedDiskImages(images, this);
        _logger = logger;
    }

    public string Uri { get; }

    /// <summary>
    /// The image operations given at connect, with <see cref="IDiskImages.DeleteAsync"/> refused for an image any domain
    /// of this host uses (see <see cref="GuardedDiskImages"/>).
    /// </summary>
    public IDiskImages Images { get; }

    public event EventHandler<DomainEvent>? DomainEvent;

    /// <summary>
    /// Opens a connection (qemu:///system, qemu+unix:///system?socket=/path/libvirt-sock, test:///default) and
    /// subscribes to lifecycle and block-job events. The first call in the process starts the libvirt event loop.
    /// </summary>
    /// <param name="uri">libvirt connection URI.</param>
    /// <param name="logger">Optional logger.</param>
    /// <param name="images">Disk image operations; <see cref="QemuImgDiskImages"/> by default.</param>
    /// <param name="cancellationToken">Stops waiting; a connect that is under way still completes and is closed.</param>
    /// <param name="timeout">
    /// Longest wait for the connection (default 30 s): a libvirtd that accepts the socket and never answers fails the
    /// connect with a HypervisorException instead of blocking its caller (the silo's start) forever.
    /// </param>
    public static async Task<LibvirtHypervisor> ConnectAsync(string uri, ILogger? logger = null, IDiskImages? images = null, CancellationToken cancellationToken = default, TimeSpan? timeout = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(uri);
        logger ??= NullLogger.Instance;
        LibvirtEventLoop.EnsureStarted();
        var sw = Stopwatch.StartNew();
        var connectTask = Task.Run(
            () =>
            {
                var conn = Open(uri);
                var hypervisor = new LibvirtHypervisor(uri, conn, images ?? new QemuImgDiskImages(logger), logger);
                try
                {
                    hypervisor.RegisterCallbacks(conn);
                }
                catch
                {
                    hypervisor.Close();
                    throw;
                }

                return hypervisor;
            },
            CancellationToken.None);

        var limit = timeout ?? TimeSpan.FromSeconds(30);
        try
        {
            var result = await connectTask.WaitAsync(limit, cancellationToken).ConfigureAwait(false);
            Log.Connected(logger, uri, sw.ElapsedMilliseconds);
            return result;
        }
        catch (Exception e) when (e is OperationCanceledException or TimeoutException)
        {
            // The connect goes on in the background: a connection that opens late is closed.
            _ = connectTask.ContinueWith(t => t.Result.Close(), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
            _ = connectTask.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
            if (e is TimeoutException)
            {
                throw new HypervisorException(
                    HypervisorErrorKind.ConnectionFailed,
                    $"libvirt at {uri} did not answer within {limit.TotalSeconds:F0} s (libvirtd hung or overloaded?)");
            }

            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await Task.Run(Close).ConfigureAwait(false);
        FailAllWatches(new ObjectDisposedException(nameof(LibvirtHypervisor)));
    }

    public Task<HypervisorFacts> GetFactsAsync(CancellationToken cancellationToken = default) =>
        RunAsync(
            () =>
            {
                var host = LibvirtNative.TakeString(LibvirtNative.virConnectGetHostname(_conn)) ?? throw LibvirtErrors.Last("virConnectGetHostname");
                if (LibvirtNative.virConnectGetLibVersion(_conn, out var lib) < 0)
                {
                    throw LibvirtErrors.Last("virConnectGetLibVersion");
                }

                if (LibvirtNative.virConnectGetVersion(_conn, out var hv) < 0)
                {
                    throw LibvirtErrors.Last("virConnectGetVersion");
                }

                var type = LibvirtNative.PeekString(LibvirtNative.virConnectGetType(_conn)) ?? throw LibvirtErrors.Last("virConnectGetType");
                return new HypervisorFacts(host, Uri, type, FormatVersion(lib.Value), FormatVersion(hv.Value));
            },
            cancellationToken);

    public Task<NodeCapacity> GetCapacityAsync(CancellationToken cancellationToken = default) =>
        RunAsync(
            () =>
            {
                const int NodeInfoBytes = 64;
                Span<byte> info = stackalloc byte[NodeInfoBytes];
                unsafe
                {
                    fixed (byte* p = info)
                    {
                        if (LibvirtNative.virNodeGetInfo(_conn, p) < 0)
                        {
                            throw LibvirtErrors.Last("virNodeGetInfo");
                        }
                    }
                }

                var memoryKiB = (long)BitConverter.ToUInt64(info[32..40]);
                var cpus = (int)BitConverter.ToUInt32(info[40..44]);
                var free = LibvirtNative.virNodeGetFreeMemory(_conn);
                if (free == 0)
                {
                    throw LibvirtErrors.Last("virNodeGetFreeMemory");
                }

                return new NodeCapacity(memoryKiB, (long)(free / 1024), cpus);
            },
            cancellationToken);

    public async Task<IReadOnlyList<DomainInfo>> ListDomainsAsync(CancellationToken cancellationToken = default)
    {
        var domains = await ListDomainsAsLibvirtSeesThemAsync(cancellationToken).ConfigureAwait(false);
        var result = new List<DomainInfo>(domains.Count);
        foreach (var domain in domains)
        {
            result.Add(await WithOfflineChainsAsync(domain, cancellationToken).ConfigureAwait(false));
        }

        return result;
    }

    private Task<IReadOnlyList<DomainInfo>> ListDomainsAsLibvirtSeesThemAsync(CancellationToken cancellationToken) =>
        RunAsync<IReadOnlyList<DomainInfo>>(
            () =>
            {
                var count = LibvirtNative.virConnectListAllDomains(_conn, out var array, 0);
                if (count < 0)
                {
                    throw LibvirtErrors.Last("virConnectListAllDomains");
                }

                var handles = new DomainHandle[count];
                for (var i = 0; i < count; i++)
                {
                    handles[i] = new DomainHandle(LibvirtNative.ElementAt(array, i));
                }

                LibvirtNative.FreeArray(array);
                var result = new List<DomainInfo>(count);
                try
                {
                    foreach (var handle in handles)
                    {
                        try
                        {
                            result.Add(ReadDomain(handle));
                        }
                        catch (HypervisorException ex) when (ex.Kind == HypervisorErrorKind.DomainNotFound)
                        {
                            // Undefined between the listing and the read: it is gone, so it is not listed.
                        }
                    }
                }
                finally
                {
                    foreach (var handle in handles)
                    {
                        handle.Dispose();
                    }
                }

                return result.OrderBy(d => d.Name, StringComparer.Ordinal).ToList();
            },
            cancellationToken);

    public async Task<DomainInfo> GetDomainAsync(string domain, CancellationToken cancellationToken = default)
    {
        var info = await RunAsync(
            () =>
            {
                using var dom = Lookup(domain);
                return ReadDomain(dom);
            },
            cancellationToken).ConfigureAwait(false);
        return await WithOfflineChainsAsync(info, cancellationToken).ConfigureAwait(false);
    }

    public Task<string> GetDomainXmlAsync(string domain, bool inactive = false, CancellationToken cancellationToken = default) =>
        RunAsync(
            () =>
            {
                using var dom = Lookup(domain);
                return GetXml(dom, domain, inactive ? DomainXmlInactive : 0);
            },
            cancellationToken);

    public Task<string> DefineDomainAsync(string xml, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(xml);
        return RunAsync(
            () =>
            {
                using var dom = LibvirtNative.virDomainDefineXML(_conn, xml);
                if (dom.IsInvalid)
                {
                    throw LibvirtErrors.Last("virDomainDefineXML");
                }

                return LibvirtNative.PeekString(LibvirtNative.virDomainGetName(dom)) ?? throw LibvirtErrors.Last("virDomainGetName");
            },
            cancellationToken);
    }

    /// <summary>
    /// Undefines with the snapshot and checkpoint metadata (the bitmaps stay in the images, and the checkpoints can be
    /// redefined from their XML). A driver without checkpoints (test:///) refuses the checkpoint flag: then without it.
    /// </summary>
    public unsafe Task UndefineDomainAsync(string domain, CancellationToken cancellationToken = default) =>
        DomainCallAsync(
            domain,
            "virDomainUndefineFlags",
            dom =>
            {
                var rc = LibvirtNative.virDomainUndefineFlags(dom, DomainUndefineSnapshotsMetadata | DomainUndefineCheckpointsMetadata);
                if (rc < 0 && LibvirtNative.virGetLastError() is var error && error is not null && error->Code == VirErrorCode.InvalidArg)
                {
                    LibvirtNative.virResetLastError();
                    rc = LibvirtNative.virDomainUndefineFlags(dom, DomainUndefineSnapshotsMetadata);
                }

                return rc;
            },
            cancellationToken);

    public Task StartDomainAsync(string domain, bool paused = false, CancellationToken cancellationToken = default) =>
        DomainCallAsync(
            domain,
            "virDomainCreateWithFlags",
            dom =>
            {
                // Drivers disagree on the error for "already running" (QEMU: operation invalid, test: internal error).
                if (LibvirtNative.virDomainGetState(dom, out var state, out _, 0) == 0 && state != (int)DomainPowerState.ShutOff && state != (int)DomainPowerState.Crashed)
                {
                    throw new HypervisorException(HypervisorErrorKind.InvalidDomainState, $"domain {domain} is already active ({(DomainPowerState)state})");
                }

                return LibvirtNative.virDomainCreateWithFlags(dom, paused ? DomainStartPaused : 0);
            },
            cancellationToken);

    public Task DestroyDomainAsync(string domain, CancellationToken cancellationToken = default) =>
        DomainCallAsync(domain, "virDomainDestroy", LibvirtNative.virDomainDestroy, cancellationToken);

    public Task SuspendDomainAsync(string domain, CancellationToken cancellationToken = default) =>
        DomainCallAsync(domain, "virDomainSuspend", LibvirtNative.virDomainSuspend, cancellationToken);

    public Task ResumeDomainAsync(string domain, CancellationToken cancellationToken = default) =>
        DomainCallAsync(domain, "virDomainResume", LibvirtNative.virDomainResume, cancellationToken);

    public Task CreateExternalSnapshotAsync(string domain, IReadOnlyList<OverlaySpec> overlays, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(overlays);
        if (overlays.Count == 0)
        {
            throw new HypervisorException(HypervisorErrorKind.InvalidArgument, "an external snapshot needs at least one overlay");
        }

        if (overlays.Select(o => o.Target).Distinct(StringComparer.Ordinal).Count() != overlays.Count
            || overlays.Select(o => o.OverlayPath).Distinct(StringComparer.Ordinal).Count() != overlays.Count)
        {
            throw new HypervisorException(HypervisorErrorKind.InvalidArgument, "each disk and each overlay path may appear only once");
        }

        foreach (var overlay in overlays)
        {
            if (!Path.IsPathFullyQualified(overlay.OverlayPath))
            {
                throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"overlay path must be absolute: {overlay.OverlayPath}");
            }

            if (File.Exists(overlay.OverlayPath) || Directory.Exists(overlay.OverlayPath))
            {
                throw new HypervisorException(HypervisorErrorKind.FileExists, $"overlay {overlay.OverlayPath} for {domain}/{overlay.Target} exists already; refusing to reuse it");
            }
        }

        return RunAsync(
            () =>
            {
                var sw = Stopwatch.StartNew();
                using var dom = Lookup(domain);
                var xml = GetXml(dom, domain, 0);
                var fileDisks = DomainXml.ParseDisks(xml).Select(d => d.Target).ToHashSet(StringComparer.Ordinal);
                foreach (var overlay in overlays)
                {
                    if (!fileDisks.Contains(overlay.Target))
                    {
                        throw new HypervisorException(HypervisorErrorKind.DiskNotFound, $"domain {domain} has no file-backed disk {overlay.Target}");
                    }
                }

                var request = DomainXml.ExternalSnapshotRequest(overlays, DomainXml.AllDiskTargets(xml));
                using var snapshot = LibvirtNative.virDomainSnapshotCreateXML(dom, request, SnapshotCreateDiskOnly | SnapshotCreateAtomic | SnapshotCreateNoMetadata);
                if (snapshot.IsInvalid)
                {
                    throw LibvirtErrors.Last($"virDomainSnapshotCreateXML({domain}, disk-only external)");
                }

                Log.OverlaysCreated(_logger, domain, overlays.Count, sw.Elapsed.TotalMilliseconds);
            },
            cancellationToken);
    }

    public Task<BlockJobInfo?> GetBlockJobAsync(string domain, string target, CancellationToken cancellationToken = default) =>
        RunAsync(
            () =>
            {
                using var dom = Lookup(domain);
                return TryGetBlockJob(dom, domain, target);
            },
            cancellationToken);

    public Task StartActiveCommitAsync(string domain, string target, string? basePath, long bandwidthBytesPerSecond = 0, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bandwidthBytesPerSecond);
        return RunAsync(
            () =>
            {
                using var dom = Lookup(domain);
                var disk = DomainXml.ParseDisks(GetXml(dom, domain, 0)).FirstOrDefault(d => d.Target == target)
                    ?? throw new HypervisorException(HypervisorErrorKind.DiskNotFound, $"domain {domain} has no file-backed disk {target}");

                // An active commit needs a running QEMU. Asked first: the XML of a shut-off domain names no backing
                // chain (libvirt does not read an inactive domain's images), so the chain check below would blame a
                // missing overlay (contract suite: InvalidDomainState, as for every other block-job call).
                if (LibvirtNative.virDomainGetState(dom, out var state, out _, 0) == 0 && state is (int)DomainPowerState.ShutOff or (int)DomainPowerState.Crashed)
                {
                    throw new HypervisorException(HypervisorErrorKind.InvalidDomainState, $"domain {domain} is not running: an active commit of {target} needs a running domain");
                }

                if (disk.BackingChain.Count == 0)
                {
                    throw new HypervisorException(
                        HypervisorErrorKind.InvalidArgument,
                        $"disk {target} of {domain} has no backing image ({disk.SourcePath} is the base): there is no overlay to commit");
                }

                if (basePath is not null && basePath != disk.BackingChain[0].Path)
                {
                    throw new HypervisorException(
                        HypervisorErrorKind.InvalidArgument,
                        $"disk {target} of {domain}: '{basePath}' is not the image right below {disk.SourcePath} ('{disk.BackingChain[0].Path}' is); refusing to commit deeper than one layer");
                }

                if (TryGetBlockJob(dom, domain, target) is { } existing)
                {
                    throw new HypervisorException(HypervisorErrorKind.BlockJobActive, $"disk {target} of {domain} already has a {existing.Kind} block job");
                }

                // Watch before starting: READY can arrive within milliseconds, before any caller awaits it.
                var key = (domain, target);
                var watch = new BlockJobWatch();
                _watches[key] = watch;
                // With a base: that base and SHALLOW, so libvirt itself refuses anything but the image right below the
                // top. Without: libvirt's default, the deepest image of the chain.
                var flags = BlockCommitActive | (basePath is not null ? BlockCommitShallow : 0) | (bandwidthBytesPerSecond > 0 ? BlockCommitBandwidthBytes : 0);
                if (LibvirtNative.virDomainBlockCommit(dom, target, basePath, null, new CULong((nuint)bandwidthBytesPerSecond), flags) < 0)
                {
                    var error = LibvirtErrors.Last($"virDomainBlockCommit({domain}, {target}, active)");
                    _watches.TryRemove(KeyValuePair.Create(key, watch));
                    throw error;
                }

                Log.CommitStarted(_logger, domain, target, disk.SourcePath);
            },
            cancellationToken);
    }

    public async Task WaitForBlockJobReadyAsync(string domain, string target, CancellationToken cancellationToken = default)
    {
        var sw = Stopwatch.StartNew();
        var watch = CurrentWatch(domain, target);
        if (!watch.Ready.Task.IsCompleted)
        {
            // Subscribed first, then looked: a READY that fires in between is caught by the watch.
            var job = await GetBlockJobAsync(domain, target, cancellationToken).ConfigureAwait(false);
            if (!watch.Ready.Task.IsCompleted)
            {
                if (job is null)
                {
                    _watches.TryRemove(KeyValuePair.Create((domain, target), watch));
                    throw new HypervisorException(HypervisorErrorKind.NoBlockJob, $"disk {target} of {domain} has no block job to wait for");
                }

                if (job.Ready)
                {
                    Log.CommitReady(_logger, domain, target, sw.Elapsed.TotalMilliseconds, "job info");
                    return;
                }
            }
        }

        await watch.Ready.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        Log.CommitReady(_logger, domain, target, sw.Elapsed.TotalMilliseconds, "event");
    }

    public Task PivotAsync(string domain, string target, CancellationToken cancellationToken = default) =>
        EndBlockJobAsync(domain, target, pivot: true, cancellationToken);

    public Task AbortBlockJobAsync(string domain, string target, CancellationToken cancellationToken = default) =>
        EndBlockJobAsync(domain, target, pivot: false, cancellationToken);

    public Task<InternalSnapshotInfo> CreateInternalSnapshotAsync(string domain, string name, string? description = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        return RunAsync(
            () =>
            {
                var sw = Stopwatch.StartNew();
                using var dom = Lookup(domain);
                var formats = DomainXml.DiskFormats(GetXml(dom, domain, 0));
                var notQcow2 = formats.Where(f => f.Value != "qcow2").Select(f => $"disk {f.Key} is {f.Value}").ToList();
                if (notQcow2.Count > 0)
                {
                    throw new HypervisorException(
                        HypervisorErrorKind.UnsupportedDiskFormat,
                        $"internal checkpoints need qcow2 disks, but on domain {domain} {string.Join(", ", notQcow2)}. "
                        + "Use a live backup (external overlay) for this VM instead, or convert the disk to qcow2 (qemu-img convert -O qcow2) while it is shut off.");
                }

                using (var existing = LibvirtNative.virDomainSnapshotLookupByName(dom, name, 0))
                {
                    if (!existing.IsInvalid)
                    {
                        throw new HypervisorException(HypervisorErrorKind.SnapshotExists, $"domain {domain} already has a snapshot named {name}");
                    }

                    LibvirtNative.virResetLastError();
                }

                using var snapshot = LibvirtNative.virDomainSnapshotCreateXML(dom, DomainXml.InternalSnapshotRequest(name, description), 0);
                if (snapshot.IsInvalid)
                {
                    throw LibvirtErrors.Last($"virDomainSnapshotCreateXML({domain}, {name})");
                }

                var info = DomainXml.ParseSnapshot(GetSnapshotXml(snapshot, name));
                Log.InternalSnapshotCreated(_logger, domain, name, info.HasMemory, sw.Elapsed.TotalMilliseconds);
                return info;
            },
            cancellationToken);
    }

    public Task<IReadOnlyList<InternalSnapshotInfo>> ListInternalSnapshotsAsync(string domain, CancellationToken cancellationToken = default) =>
        RunAsync<IReadOnlyList<InternalSnapshotInfo>>(
            () =>
            {
                using var dom = Lookup(domain);
                var count = LibvirtNative.virDomainListAllSnapshots(dom, out var array, SnapshotListInternal);
                if (count < 0)
                {
                    throw LibvirtErrors.Last($"virDomainListAllSnapshots({domain})");
                }

                var handles = new SnapshotHandle[count];
                for (var i = 0; i < count; i++)
                {
                    handles[i] = new SnapshotHandle(LibvirtNative.ElementAt(array, i));
                }

                LibvirtNative.FreeArray(array);
                try
                {
                    return handles.Select(h => DomainXml.ParseSnapshot(GetSnapshotXml(h, domain)))
                        .OrderBy(s => s.CreatedAt)
                        .ThenBy(s => s.Name, StringComparer.Ordinal)
                        .ToList();
                }
                finally
                {
                    foreach (var handle in handles)
                    {
                        handle.Dispose();
                    }
                }
            },
            cancellationToken);

    public Task RevertInternalSnapshotAsync(string domain, string name, RevertTarget target = RevertTarget.AsSaved, CancellationToken cancellationToken = default)
    {
        var flags = target switch
        {
            RevertTarget.Running => SnapshotRevertRunning,
            RevertTarget.Paused => SnapshotRevertPaused,
            _ => 0u,
        };
        return SnapshotCallAsync(domain, name, "virDomainRevertToSnapshot", s => LibvirtNative.virDomainRevertToSnapshot(s, flags), cancellationToken);
    }

    public Task DeleteInternalSnapshotAsync(string domain, string name, CancellationToken cancellationToken = default) =>
        SnapshotCallAsync(domain, name, "virDomainSnapshotDelete", s => LibvirtNative.virDomainSnapshotDelete(s, 0), cancellationToken);

    public Task<int> FreezeFileSystemsAsync(string domain, CancellationToken cancellationToken = default) =>
        AgentCallAsync(domain, "virDomainFSFreeze", dom => LibvirtNative.virDomainFSFreeze(dom, IntPtr.Zero, 0, 0), cancellationToken);

    public Task<int> ThawFileSystemsAsync(string domain, CancellationToken cancellationToken = default) =>
        AgentCallAsync(domain, "virDomainFSThaw", dom => LibvirtNative.virDomainFSThaw(dom, IntPtr.Zero, 0, 0), cancellationToken);

    /// <summary>
    /// Ends a block job with VIR_DOMAIN_BLOCK_JOB_ABORT_ASYNC and awaits its end by event: libvirt's synchronous abort
    /// holds the domain's job while it waits, which would serialise the pivots of several disks.
    /// </summary>
    private async Task EndBlockJobAsync(string domain, string target, bool pivot, CancellationToken cancellationToken)
    {
        var sw = Stopwatch.StartNew();
        var key = (domain, target);

        // Watch before asking: the COMPLETED event may come before the abort call even returns.
        var watch = CurrentWatch(domain, target);
        try
        {
            await RunAsync(
                () =>
                {
                    using var dom = Lookup(domain);
                    var job = TryGetBlockJob(dom, domain, target)
                        ?? throw new HypervisorException(HypervisorErrorKind.NoBlockJob, $"disk {target} of {domain} has no block job to {(pivot ? "pivot" : "abort")}");
                    if (pivot && !job.Ready)
                    {
                        throw new HypervisorException(HypervisorErrorKind.InvalidDomainState, $"the {job.Kind} job on {domain}/{target} is not ready for pivot ({job.Current}/{job.End})");
                    }

                    if (LibvirtNative.virDomainBlockJobAbort(dom, target, BlockJobAbortAsync | (pivot ? BlockJobAbortPivot : 0)) < 0)
                    {
                        throw LibvirtErrors.Last($"virDomainBlockJobAbort({domain}, {target}{(pivot ? ", pivot" : string.Empty)})");
                    }
                },
                cancellationToken).ConfigureAwait(false);

            var status = await WaitForEndAsync(domain, target, watch, cancellationToken).ConfigureAwait(false);
            if (pivot && status is not BlockJobEventStatus.Completed)
            {
                throw new HypervisorException(HypervisorErrorKind.BlockJobFailed, $"pivot of {domain}/{target} ended with {status}");
            }
        }
        finally
        {
            _watches.TryRemove(KeyValuePair.Create(key, watch));
        }

        Log.BlockJobEnded(_logger, domain, target, pivot ? "pivot" : "abort", sw.Elapsed.TotalMilliseconds);
    }

    /// <summary>
    /// The job's end status from its event. As a safety net only (events are the mechanism), a job that has vanished
    /// without an event after <see cref="EventSafetyNet"/> counts as ended (null status).
    /// </summary>
    private async Task<BlockJobEventStatus?> WaitForEndAsync(string domain, string target, BlockJobWatch watch, CancellationToken cancellationToken)
    {
        while (true)
        {
            try
            {
                return await watch.Ended.Task.WaitAsync(EventSafetyNet, cancellationToken).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                if (await GetBlockJobAsync(domain, target, cancellationToken).ConfigureAwait(false) is null && !watch.Ended.Task.IsCompleted)
                {
                    Log.BlockJobEndedWithoutEvent(_logger, domain, target);
                    return null;
                }
            }
        }
    }

    private Task DomainCallAsync(string domain, string operation, Func<DomainHandle, int> call, CancellationToken cancellationToken) =>
        RunAsync(
            () =>
            {
                using var dom = Lookup(domain);
                if (call(dom) < 0)
                {
                    throw LibvirtErrors.Last($"{operation}({domain})");
                }
            },
            cancellationToken);

    private Task<int> AgentCallAsync(string domain, string operation, Func<DomainHandle, int> call, CancellationToken cancellationToken) =>
        RunAsync(
            () =>
            {
                using var dom = Lookup(domain);
                var n = call(dom);
                if (n < 0)
                {
                    throw LibvirtErrors.Last($"{operation}({domain})", static code => code switch
                    {
                        VirErrorCode.AgentUnresponsive or VirErrorCode.AgentUnsynced or VirErrorCode.ArgumentUnsupported
                            or VirErrorCode.OperationUnsupported or VirErrorCode.NoSupport or VirErrorCode.OperationTimeout => HypervisorErrorKind.AgentUnavailable,
                        _ => null,
                    });
                }

                return n;
            },
            cancellationToken);

    private Task SnapshotCallAsync(string domain, string name, string operation, Func<SnapshotHandle, int> call, CancellationToken cancellationToken) =>
        RunAsync(
            () =>
            {
                var sw = Stopwatch.StartNew();
                using var dom = Lookup(domain);
                using var snapshot = LibvirtNative.virDomainSnapshotLookupByName(dom, name, 0);
                if (snapshot.IsInvalid)
                {
                    throw LibvirtErrors.Last($"virDomainSnapshotLookupByName({domain}, {name})");
                }

                if (call(snapshot) < 0)
                {
                    throw LibvirtErrors.Last($"{operation}({domain}, {name})");
                }

                Log.SnapshotOperation(_logger, operation, domain, name, sw.Elapsed.TotalMilliseconds);
            },
            cancellationToken);

    private Task RunAsync(Action call, CancellationToken cancellationToken) =>
        RunAsync(
            () =>
            {
                call();
                return true;
            },
            cancellationToken);

    /// <summary>Runs a blocking libvirt call off the caller's thread; libvirt's per-thread error is read inside it.</summary>
    private Task<T> RunAsync<T>(Func<T> call, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if (_connectionClosed)
        {
            return Task.FromException<T>(new HypervisorException(HypervisorErrorKind.ConnectionFailed, Unreachable ?? $"the connection to {Uri} was closed"));
        }

        return BoundAsync(Task.Run(call, cancellationToken));
    }

    private DomainHandle Lookup(string domain)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(domain);
        var dom = LibvirtNative.virDomainLookupByName(_conn, domain);
        if (dom.IsInvalid)
        {
            var error = LibvirtErrors.Last($"virDomainLookupByName({domain})");
            dom.Dispose();
            throw error;
        }

        return dom;
    }

    private static string GetXml(DomainHandle dom, string domain, uint flags) =>
        LibvirtNative.TakeString(LibvirtNative.virDomainGetXMLDesc(dom, flags)) ?? throw LibvirtErrors.Last($"virDomainGetXMLDesc({domain})");

    private static string GetSnapshotXml(SnapshotHandle snapshot, string what) =>
        LibvirtNative.TakeString(LibvirtNative.virDomainSnapshotGetXMLDesc(snapshot, 0)) ?? throw LibvirtErrors.Last($"virDomainSnapshotGetXMLDesc({what})");

    private static unsafe DomainInfo ReadDomain(DomainHandle dom)
    {
        var name = LibvirtNative.PeekString(LibvirtNative.virDomainGetName(dom)) ?? throw LibvirtErrors.Last("virDomainGetName");
        var uuidBuffer = stackalloc byte[UuidStringBufLen];
        if (LibvirtNative.virDomainGetUUIDString(dom, uuidBuffer) < 0)
        {
            throw LibvirtErrors.Last($"virDomainGetUUIDString({name})");
        }

        var uuid = Guid.Parse(Marshal.PtrToStringUTF8((IntPtr)uuidBuffer) ?? string.Empty);
        if (LibvirtNative.virDomainGetState(dom, out var state, out _, 0) < 0)
        {
            throw LibvirtErrors.Last($"virDomainGetState({name})");
        }

        var info = DomainXml.Parse(GetXml(dom, name, 0), (DomainPowerState)state);
        return info with { Uuid = uuid };
    }

    /// <summary>
    /// The disk's block job or null. The public struct has no ready flag; libvirt reports cur == end (end &gt; 0) only
    /// once QEMU says the job is ready (it holds cur below end until then for exactly this reason).
    /// </summary>
    private static BlockJobInfo? TryGetBlockJob(DomainHandle dom, string domain, string target)
    {
        var rc = LibvirtNative.virDomainGetBlockJobInfo(dom, target, out var info, 0);
        if (rc < 0)
        {
            throw LibvirtErrors.Last($"virDomainGetBlockJobInfo({domain}, {target})", static code => code == VirErrorCode.InvalidArg ? HypervisorErrorKind.DiskNotFound : null);
        }

        if (rc == 0)
        {
            return null;
        }

        var kind = Enum.IsDefined(typeof(BlockJobKind), info.Type) ? (BlockJobKind)info.Type : BlockJobKind.Unknown;
        return new BlockJobInfo(target, kind, (long)info.Cur, (long)info.End, info.End > 0 && info.Cur == info.End);
    }

    private static string FormatVersion(nuint version) =>
        $"{version / 1_000_000}.{version / 1000 % 1000}.{version % 1000}";

    private BlockJobWatch CurrentWatch(string domain, string target) =>
        _watches.AddOrUpdate((domain, target), _ => new BlockJobWatch(), (_, existing) => existing.Ended.Task.IsCompleted ? new BlockJobWatch() : existing);

    private void FailAllWatches(Exception error)
    {
        foreach (var (key, watch) in _watches)
        {
            watch.Fail(error);
            _watches.TryRemove(KeyValuePair.Create(key, watch));
        }
    }

    /// <summary>What is known of one disk's block job from events: READY, then how it ended.</summary>
    private sealed class BlockJobWatch
    {
        public TaskCompletionSource Ready { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource<BlockJobEventStatus> Ended { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Fail(Exception error)
        {
            Ready.TrySetException(error);
            Ended.TrySetException(error);
            _ = Ready.Task.Exception;
            _ = Ended.Task.Exception;
        }
    }
}
