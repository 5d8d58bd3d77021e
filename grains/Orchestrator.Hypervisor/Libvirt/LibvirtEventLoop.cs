using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Orchestrator.Hypervisor.Libvirt.Native;

namespace Orchestrator.Hypervisor.Libvirt;

/// <summary>
/// The one libvirt event loop of the process. libvirt allows a single event implementation per process and it must
/// be registered before the first connection is opened; after that one dedicated background thread runs
/// virEventRunDefaultImpl forever. Every event callback (lifecycle, block job, connection close) runs on that thread.
/// </summary>
internal static unsafe class LibvirtEventLoop
{
    private static readonly Lock Gate = new();
    private static Thread? _thread;
    private static Exception? _startError;

    /// <summary>The managed id of the event-loop thread (0 before start).</summary>
    internal static int ThreadId { get; private set; }

    /// <summary>Registers the default event implementation and starts its thread, once per process.</summary>
    internal static void EnsureStarted()
    {
        lock (Gate)
        {
            if (_startError is not null)
            {
                throw new HypervisorException(HypervisorErrorKind.ConnectionFailed, "libvirt event loop could not start", inner: _startError);
            }

            if (_thread is not null)
            {
                return;
            }

            try
            {
                // libvirt prints every error to stderr unless a handler is installed; errors are read per call instead.
                LibvirtNative.virSetErrorFunc(IntPtr.Zero, &IgnoreError);
                if (LibvirtNative.virInitialize() < 0)
                {
                    throw LibvirtErrors.Last("virInitialize");
                }

                if (LibvirtNative.virEventRegisterDefaultImpl() < 0)
                {
                    throw LibvirtErrors.Last("virEventRegisterDefaultImpl");
                }
            }
            catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException or HypervisorException)
            {
                _startError = ex;
                throw new HypervisorException(HypervisorErrorKind.ConnectionFailed, $"libvirt is not usable here: {ex.Message}", inner: ex);
            }

            _thread = new Thread(Run)
            {
                IsBackground = true,
                Name = "libvirt-event-loop",
            };
            _thread.Start();
            ThreadId = _thread.ManagedThreadId;
        }
    }

    private static void Run()
    {
        while (true)
        {
            if (LibvirtNative.virEventRunDefaultImpl() < 0)
            {
                // Only fails on a broken poll(); avoid a hot loop and keep going.
                LibvirtNative.virResetLastError();
                Thread.Sleep(50);
            }
        }
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static void IgnoreError(IntPtr userData, IntPtr error)
    {
    }
}
