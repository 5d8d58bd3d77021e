using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Orchestrator.Hypervisor.Libvirt.Native;

/// <summary>
/// P/Invoke declarations for libvirt.so.0 (libvirt 9.0 headers: libvirt-host.h, libvirt-domain.h,
/// libvirt-domain-snapshot.h, virterror.h, libvirt-event.h). Strings that libvirt allocates (char*) are returned as
/// pointers and freed with free(); strings it owns (const char*) are only read.
/// </summary>
internal static unsafe partial class LibvirtNative
{
    private const string Lib = "libvirt.so.0";

    [LibraryImport(Lib)]
    internal static partial int virInitialize();

    [LibraryImport(Lib)]
    internal static partial int virEventRegisterDefaultImpl();

    [LibraryImport(Lib)]
    internal static partial int virEventRunDefaultImpl();

    /// <summary>handler: void (*)(void *userData, virErrorPtr error).</summary>
    [LibraryImport(Lib)]
    internal static partial void virSetErrorFunc(IntPtr userData, delegate* unmanaged[Cdecl]<IntPtr, IntPtr, void> handler);

    [LibraryImport(Lib)]
    internal static partial VirError* virGetLastError();

    [LibraryImport(Lib)]
    internal static partial void virResetLastError();

    // ---- connection ----

    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial ConnectHandle virConnectOpen(string name);

    [LibraryImport(Lib)]
    internal static partial int virConnectClose(IntPtr conn);

    /// <summary>cb: void (*)(virConnectPtr conn, int reason, void *opaque).</summary>
    [LibraryImport(Lib)]
    internal static partial int virConnectRegisterCloseCallback(
        ConnectHandle conn,
        delegate* unmanaged[Cdecl]<IntPtr, int, IntPtr, void> cb,
        IntPtr opaque,
        delegate* unmanaged[Cdecl]<IntPtr, void> freecb);

    [LibraryImport(Lib)]
    internal static partial int virConnectUnregisterCloseCallback(ConnectHandle conn, delegate* unmanaged[Cdecl]<IntPtr, int, IntPtr, void> cb);

    [LibraryImport(Lib)]
    internal static partial int virConnectSetKeepAlive(ConnectHandle conn, int interval, uint count);

    [LibraryImport(Lib)]
    internal static partial IntPtr virConnectGetHostname(ConnectHandle conn);

    /// <summary>info: struct virNodeInfo { char model[32]; unsigned long memory (KiB); unsigned int cpus, mhz, nodes, sockets, cores, threads; } (64 bytes on x86-64).</summary>
    [LibraryImport(Lib)]
    internal static partial int virNodeGetInfo(ConnectHandle conn, byte* info);

    /// <summary>Free memory of the host in bytes; 0 on error.</summary>
    [LibraryImport(Lib)]
    internal static partial ulong virNodeGetFreeMemory(ConnectHandle conn);

    [LibraryImport(Lib)]
    internal static partial int virConnectGetLibVersion(ConnectHandle conn, out CULong libVer);

    [LibraryImport(Lib)]
    internal static partial int virConnectGetVersion(ConnectHandle conn, out CULong hvVer);

    [LibraryImport(Lib)]
    internal static partial IntPtr virConnectGetType(ConnectHandle conn);

    [LibraryImport(Lib)]
    internal static partial int virConnectListAllDomains(ConnectHandle conn, out IntPtr domains, uint flags);

    [LibraryImport(Lib)]
    internal static partial int virConnectDomainEventRegisterAny(
        ConnectHandle conn,
        IntPtr dom,
        int eventId,
        IntPtr callback,
        IntPtr opaque,
        delegate* unmanaged[Cdecl]<IntPtr, void> freecb);

    [LibraryImport(Lib)]
    internal static partial int virConnectDomainEventDeregisterAny(ConnectHandle conn, int callbackId);

    // ---- domain ----

    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial DomainHandle virDomainLookupByName(ConnectHandle conn, string name);

    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial DomainHandle virDomainDefineXML(ConnectHandle conn, string xml);

    [LibraryImport(Lib)]
    internal static partial int virDomainFree(IntPtr dom);

    /// <summary>Owned by the domain object: do not free.</summary>
    [LibraryImport(Lib)]
    internal static partial IntPtr virDomainGetName(DomainHandle dom);

    /// <summary>For event callbacks, where libvirt owns the domain pointer.</summary>
    [LibraryImport(Lib, EntryPoint = "virDomainGetName")]
    internal static partial IntPtr virDomainGetNameRaw(IntPtr dom);

    /// <summary>buf must hold VIR_UUID_STRING_BUFLEN (37) bytes.</summary>
    [LibraryImport(Lib)]
    internal static partial int virDomainGetUUIDString(DomainHandle dom, byte* buf);

    [LibraryImport(Lib)]
    internal static partial int virDomainGetState(DomainHandle dom, out int state, out int reason, uint flags);

    [LibraryImport(Lib)]
    internal static partial IntPtr virDomainGetXMLDesc(DomainHandle dom, uint flags);

    [LibraryImport(Lib)]
    internal static partial int virDomainUndefineFlags(DomainHandle dom, uint flags);

    [LibraryImport(Lib)]
    internal static partial int virDomainCreateWithFlags(DomainHandle dom, uint flags);

    [LibraryImport(Lib)]
    internal static partial int virDomainDestroy(DomainHandle dom);

    [LibraryImport(Lib)]
    internal static partial int virDomainSuspend(DomainHandle dom);

    [LibraryImport(Lib)]
    internal static partial int virDomainResume(DomainHandle dom);

    [LibraryImport(Lib)]
    internal static partial int virDomainFSFreeze(DomainHandle dom, IntPtr mountpoints, uint nmountpoints, uint flags);

    [LibraryImport(Lib)]
    internal static partial int virDomainFSThaw(DomainHandle dom, IntPtr mountpoints, uint nmountpoints, uint flags);

    // ---- block jobs ----

    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int virDomainBlockCommit(DomainHandle dom, string disk, string? baseImage, string? top, CULong bandwidth, uint flags);

    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int virDomainBlockJobAbort(DomainHandle dom, string disk, uint flags);

    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int virDomainGetBlockJobInfo(DomainHandle dom, string disk, out VirDomainBlockJobInfo info, uint flags);

    // ---- snapshots ----

    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial SnapshotHandle virDomainSnapshotCreateXML(DomainHandle dom, string xml, uint flags);

    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial SnapshotHandle virDomainSnapshotLookupByName(DomainHandle dom, string name, uint flags);

    [LibraryImport(Lib)]
    internal static partial int virDomainListAllSnapshots(DomainHandle dom, out IntPtr snaps, uint flags);

    [LibraryImport(Lib)]
    internal static partial IntPtr virDomainSnapshotGetXMLDesc(SnapshotHandle snapshot, uint flags);

    [LibraryImport(Lib)]
    internal static partial int virDomainRevertToSnapshot(SnapshotHandle snapshot, uint flags);

    [LibraryImport(Lib)]
    internal static partial int virDomainSnapshotDelete(SnapshotHandle snapshot, uint flags);

    [LibraryImport(Lib)]
    internal static partial int virDomainSnapshotFree(IntPtr snapshot);

    // ---- helpers ----

    /// <summary>Reads a string libvirt allocated and frees it with free(); null stays null.</summary>
    internal static string? TakeString(IntPtr p)
    {
        if (p == IntPtr.Zero)
        {
            return null;
        }

        try
        {
            return Marshal.PtrToStringUTF8(p);
        }
        finally
        {
            NativeMemory.Free((void*)p);
        }
    }

    /// <summary>Reads a string libvirt owns (const char*).</summary>
    internal static string? PeekString(IntPtr p) => p == IntPtr.Zero ? null : Marshal.PtrToStringUTF8(p);

    /// <summary>Frees an array libvirt allocated (the elements are taken over by the caller).</summary>
    internal static void FreeArray(IntPtr p)
    {
        if (p != IntPtr.Zero)
        {
            NativeMemory.Free((void*)p);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static IntPtr ElementAt(IntPtr array, int index) => ((IntPtr*)array)[index];
}

/// <summary>struct _virError (virterror.h).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct VirError
{
    public int Code;
    public int Domain;
    public IntPtr Message;
    public int Level;
    public IntPtr Conn;
    public IntPtr Dom;
    public IntPtr Str1;
    public IntPtr Str2;
    public IntPtr Str3;
    public int Int1;
    public int Int2;
    public IntPtr Net;
}

/// <summary>struct _virDomainBlockJobInfo: type, bandwidth (unsigned long), cur, end (unsigned long long).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct VirDomainBlockJobInfo
{
    public int Type;
    public CULong Bandwidth;
    public ulong Cur;
    public ulong End;
}

/// <summary>P/Invoke declarations for libvirt-qemu.so.0 (libvirt-qemu.h): the QEMU guest agent pass-through.</summary>
internal static partial class LibvirtQemuNative
{
    private const string Lib = "libvirt-qemu.so.0";

    /// <summary>
    /// char *virDomainQemuAgentCommand(virDomainPtr domain, const char *cmd, int timeout, unsigned int flags):
    /// timeout in seconds (-2 libvirt's default, -1 blocks, 0 does not wait); the reply is freed with free().
    /// </summary>
    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial IntPtr virDomainQemuAgentCommand(DomainHandle domain, string cmd, int timeout, uint flags);
}
