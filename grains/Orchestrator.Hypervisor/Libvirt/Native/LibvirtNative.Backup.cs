using System.Runtime.InteropServices;

namespace Orchestrator.Hypervisor.Libvirt.Native;

/// <summary>Backup jobs, job statistics and checkpoints (libvirt 9.0: libvirt-domain.h, libvirt-domain-checkpoint.h).</summary>
internal static unsafe partial class LibvirtNative
{
    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int virDomainBackupBegin(DomainHandle dom, string backupXml, string? checkpointXml, uint flags);

    /// <summary>params: a libvirt-allocated array of virTypedParameter, freed with virTypedParamsFree.</summary>
    [LibraryImport(Lib)]
    internal static partial int virDomainGetJobStats(DomainHandle dom, out int type, out IntPtr parameters, out int count, uint flags);

    [LibraryImport(Lib)]
    internal static partial void virTypedParamsFree(IntPtr parameters, int count);

    [LibraryImport(Lib)]
    internal static partial int virDomainAbortJob(DomainHandle dom);

    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial CheckpointHandle virDomainCheckpointCreateXML(DomainHandle dom, string xml, uint flags);

    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial CheckpointHandle virDomainCheckpointLookupByName(DomainHandle dom, string name, uint flags);

    [LibraryImport(Lib)]
    internal static partial int virDomainListAllCheckpoints(DomainHandle dom, out IntPtr checkpoints, uint flags);

    [LibraryImport(Lib)]
    internal static partial IntPtr virDomainCheckpointGetXMLDesc(CheckpointHandle checkpoint, uint flags);

    [LibraryImport(Lib)]
    internal static partial int virDomainCheckpointDelete(CheckpointHandle checkpoint, uint flags);

    [LibraryImport(Lib)]
    internal static partial int virDomainCheckpointFree(IntPtr checkpoint);

    /// <summary>
    /// The typed parameters of a job-statistics answer by name: integers widened to long, strings read (the array is
    /// not freed here).
    /// </summary>
    internal static Dictionary<string, object> ReadTypedParameters(IntPtr parameters, int count)
    {
        var values = new Dictionary<string, object>(StringComparer.Ordinal);
        var p = (VirTypedParameter*)parameters;
        for (var i = 0; i < count; i++)
        {
            var name = Marshal.PtrToStringUTF8((IntPtr)p[i].Field) ?? string.Empty;
            object? value = p[i].Type switch
            {
                TypedParamInt => (long)*(int*)&p[i].Value,
                TypedParamUInt => (long)*(uint*)&p[i].Value,
                TypedParamLLong => p[i].Value,
                TypedParamULLong => (long)Math.Min(*(ulong*)&p[i].Value, long.MaxValue),
                TypedParamString => PeekString(*(IntPtr*)&p[i].Value),
                _ => null,
            };
            if (value is not null)
            {
                values[name] = value;
            }
        }

        return values;
    }

    private const int TypedParamInt = 1;
    private const int TypedParamUInt = 2;
    private const int TypedParamLLong = 3;
    private const int TypedParamULLong = 4;
    private const int TypedParamString = 7;
}

/// <summary>struct _virTypedParameter: char field[80]; int type; union value (8 bytes, 8-aligned): 96 bytes.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct VirTypedParameter
{
    public fixed byte Field[80];
    public int Type;
    private readonly int _padding;
    public long Value;
}

/// <summary>virDomainCheckpointPtr; released with virDomainCheckpointFree.</summary>
internal sealed class CheckpointHandle : SafeHandle
{
    public CheckpointHandle()
        : base(IntPtr.Zero, ownsHandle: true)
    {
    }

    internal CheckpointHandle(IntPtr existing)
        : base(IntPtr.Zero, ownsHandle: true)
    {
        SetHandle(existing);
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle() => LibvirtNative.virDomainCheckpointFree(handle) == 0;
}
