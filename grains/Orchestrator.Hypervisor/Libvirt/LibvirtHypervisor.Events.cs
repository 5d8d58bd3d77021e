using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Orchestrator.Hypervisor.Libvirt.Native;
using static Orchestrator.Hypervisor.Libvirt.Native.LibvirtConstants;

namespace Orchestrator.Hypervisor.Libvirt;

/// <summary>
/// Event plumbing. The callbacks are static [UnmanagedCallersOnly] functions, so there is no delegate for the GC to
/// collect; each registration carries a GCHandle to this instance as libvirt's opaque pointer, and libvirt's free
/// callback releases it once the registration is gone. Callbacks run on the event-loop thread: they only complete
/// TaskCompletionSources (continuations run elsewhere) and raise <see cref="DomainEvent"/>.
/// </summary>
public sealed partial class LibvirtHypervisor
{
    /// <summary>Subscribes to events on <paramref name="conn"/> (the first connection, or a new one after a reconnect).</summary>
    private unsafe void RegisterCallbacks(ConnectHandle conn)
    {
        delegate* unmanaged[Cdecl]<IntPtr, IntPtr, int, int, IntPtr, int> lifecycle = &OnLifecycle;
        delegate* unmanaged[Cdecl]<IntPtr, IntPtr, IntPtr, int, int, IntPtr, void> blockJob = &OnBlockJob;
        _lifecycleCallbackId = Register(conn, EventIdLifecycle, (IntPtr)lifecycle, "lifecycle");
        _blockJobCallbackId = Register(conn, EventIdBlockJob2, (IntPtr)blockJob, "block-job-2");

        var opaque = GCHandle.ToIntPtr(GCHandle.Alloc(this));
        if (LibvirtNative.virConnectRegisterCloseCallback(conn, &OnClose, opaque, &FreeOpaque) < 0)
        {
            // Not every driver has a close callback (test:// has none): events still work without it.
            LibvirtNative.virResetLastError();
            GCHandle.FromIntPtr(opaque).Free();
        }
        else
        {
            _closeCallbackRegistered = true;
        }
    }

    private unsafe int Register(ConnectHandle conn, int eventId, IntPtr callback, string what)
    {
        var opaque = GCHandle.ToIntPtr(GCHandle.Alloc(this));
        var id = LibvirtNative.virConnectDomainEventRegisterAny(conn, IntPtr.Zero, eventId, callback, opaque, &FreeOpaque);
        if (id < 0)
        {
            var error = LibvirtErrors.Last($"virConnectDomainEventRegisterAny({what})");
            GCHandle.FromIntPtr(opaque).Free();
            throw error;
        }

        return id;
    }

    /// <summary>Deregisters the callbacks and closes the connection (blocking).</summary>
    private unsafe void Close()
    {
        if (_lifecycleCallbackId >= 0 && LibvirtNative.virConnectDomainEventDeregisterAny(_conn, _lifecycleCallbackId) < 0)
        {
            LibvirtNative.virResetLastError();
        }

        if (_blockJobCallbackId >= 0 && LibvirtNative.virConnectDomainEventDeregisterAny(_conn, _blockJobCallbackId) < 0)
        {
            LibvirtNative.virResetLastError();
        }

        if (_closeCallbackRegistered && LibvirtNative.virConnectUnregisterCloseCallback(_conn, &OnClose) < 0)
        {
            LibvirtNative.virResetLastError();
        }

        _lifecycleCallbackId = _blockJobCallbackId = -1;
        _closeCallbackRegistered = false;
        _conn.Dispose();
    }

    private void HandleLifecycle(string domain, int eventType, int detail)
    {
        var type = (LifecycleEventType)eventType;
        Log.LifecycleEvent(_logger, domain, type, detail);
        if (type is LifecycleEventType.Stopped or LifecycleEventType.Crashed)
        {
            // The QEMU process is gone, and its block jobs with it.
            foreach (var (key, watch) in _watches)
            {
                if (key.Domain == domain)
                {
                    watch.Fail(new HypervisorException(HypervisorErrorKind.BlockJobFailed, $"domain {domain} stopped while a block job on {key.Target} was running"));
                }
            }
        }

        Raise(new DomainEvent(domain, DomainEventKind.Lifecycle, DateTimeOffset.UtcNow, Lifecycle: type, Detail: detail));
    }

    private void HandleBlockJob(string domain, string target, int jobType, int status)
    {
        var job = Enum.IsDefined(typeof(BlockJobKind), jobType) ? (BlockJobKind)jobType : BlockJobKind.Unknown;
        var jobStatus = (BlockJobEventStatus)status;
        Log.BlockJobEvent(_logger, domain, target, job, jobStatus);
        if (_watches.TryGetValue((domain, target), out var watch))
        {
            switch (jobStatus)
            {
                case BlockJobEventStatus.Ready:
                    watch.Ready.TrySetResult();
                    break;
                case BlockJobEventStatus.Completed or BlockJobEventStatus.Failed or BlockJobEventStatus.Canceled:
                    if (watch.Ready.TrySetException(new HypervisorException(HypervisorErrorKind.BlockJobFailed, $"the {job} job on {domain}/{target} ended ({jobStatus}) before it was ready")))
                    {
                        _ = watch.Ready.Task.Exception;
                    }

                    watch.Ended.TrySetResult(jobStatus);
                    break;
            }
        }

        Raise(new DomainEvent(domain, DomainEventKind.BlockJob, DateTimeOffset.UtcNow, Target: target, Job: job, Status: jobStatus));
    }

    private void HandleClose(int reason)
    {
        _connectionClosed = true;
        Log.ConnectionClosed(_logger, Uri, reason);
        FailAllWatches(new HypervisorException(HypervisorErrorKind.ConnectionFailed, $"the connection to {Uri} was closed (reason {reason})"));
        StartReconnect(reason == 1
            ? $"libvirtd at {Uri} stopped answering keepalives (hung?); reconnecting"
            : $"the connection to {Uri} was closed (libvirtd restarted or stopped?); reconnecting");
    }

    private void Raise(DomainEvent e)
    {
        try
        {
            DomainEvent?.Invoke(this, e);
        }
        catch (Exception ex)
        {
            Log.EventHandlerFailed(_logger, ex, e.Domain, e.Kind);
        }
    }

    private static LibvirtHypervisor? FromOpaque(IntPtr opaque) =>
        opaque == IntPtr.Zero ? null : GCHandle.FromIntPtr(opaque).Target as LibvirtHypervisor;

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int OnLifecycle(IntPtr conn, IntPtr dom, int eventType, int detail, IntPtr opaque)
    {
        try
        {
            var name = LibvirtNative.PeekString(LibvirtNative.virDomainGetNameRaw(dom));
            if (name is not null)
            {
                FromOpaque(opaque)?.HandleLifecycle(name, eventType, detail);
            }
        }
        catch
        {
            // Nothing may unwind into libvirt's event loop.
        }

        return 0;
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static void OnBlockJob(IntPtr conn, IntPtr dom, IntPtr disk, int jobType, int status, IntPtr opaque)
    {
        try
        {
            var name = LibvirtNative.PeekString(LibvirtNative.virDomainGetNameRaw(dom));
            var target = LibvirtNative.PeekString(disk);
            if (name is not null && target is not null)
            {
                FromOpaque(opaque)?.HandleBlockJob(name, target, jobType, status);
            }
        }
        catch
        {
            // Nothing may unwind into libvirt's event loop.
        }
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static void OnClose(IntPtr conn, int reason, IntPtr opaque)
    {
        try
        {
            FromOpaque(opaque)?.HandleClose(reason);
        }
        catch
        {
            // Nothing may unwind into libvirt's event loop.
        }
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static void FreeOpaque(IntPtr opaque)
    {
        try
        {
            if (opaque != IntPtr.Zero)
            {
                GCHandle.FromIntPtr(opaque).Free();
            }
        }
        catch
        {
            // Nothing may unwind into libvirt's event loop.
        }
    }
}
