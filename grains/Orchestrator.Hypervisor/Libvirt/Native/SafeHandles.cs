using System.Runtime.InteropServices;

namespace Orchestrator.Hypervisor.Libvirt.Native;

/// <summary>virConnectPtr; released with virConnectClose.</summary>
internal sealed class ConnectHandle : SafeHandle
{
    public ConnectHandle()
        : base(IntPtr.Zero, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle()
    {
        // Returns the remaining reference count, or -1 on error; nothing useful can be done with either here.
        _ = LibvirtNative.virConnectClose(handle);
        return true;
    }
}

/// <summary>virDomainPtr; released with virDomainFree.</summary>
internal sealed class DomainHandle : SafeHandle
{
    public DomainHandle()
        : base(IntPtr.Zero, ownsHandle: true)
    {
    }

    internal DomainHandle(IntPtr existing)
        : base(IntPtr.Zero, ownsHandle: true)
    {
        SetHandle(existing);
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle() => LibvirtNative.virDomainFree(handle) == 0;
}

/// <summary>virDomainSnapshotPtr; released with virDomainSnapshotFree.</summary>
internal sealed class SnapshotHandle : SafeHandle
{
    public SnapshotHandle()
        : base(IntPtr.Zero, ownsHandle: true)
    {
    }

    internal SnapshotHandle(IntPtr existing)
        : base(IntPtr.Zero, ownsHandle: true)
    {
        SetHandle(existing);
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle() => LibvirtNative.virDomainSnapshotFree(handle) == 0;
}
