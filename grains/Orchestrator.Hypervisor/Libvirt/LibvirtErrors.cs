using System.Runtime.InteropServices;
using Orchestrator.Hypervisor.Libvirt.Native;

namespace Orchestrator.Hypervisor.Libvirt;

/// <summary>
/// Turns libvirt's last error into a <see cref="HypervisorException"/>. libvirt keeps the last error per thread and most
/// public entry points reset it, so <see cref="Last"/> must run on the thread of the failing call, right after it and
/// before any other libvirt call (including a SafeHandle release).
/// </summary>
internal static class LibvirtErrors
{
    /// <summary>The error libvirt raised for the failing call just made on this thread.</summary>
    /// <param name="operation">What was attempted, for the message ("virDomainBlockCommit(web-1, vda)").</param>
    /// <param name="refine">Optional per-operation mapping that wins over the general one when it returns a kind.</param>
    internal static unsafe HypervisorException Last(string operation, Func<int, HypervisorErrorKind?>? refine = null)
    {
        var error = LibvirtNative.virGetLastError();
        if (error is null)
        {
            return new HypervisorException(HypervisorErrorKind.OperationFailed, $"{operation} failed (libvirt reported no error)");
        }

        var code = error->Code;
        var message = Marshal.PtrToStringUTF8(error->Message) ?? $"libvirt error {code}";
        var kind = refine?.Invoke(code) ?? Map(code, error->Int1);
        LibvirtNative.virResetLastError();
        return new HypervisorException(kind, $"{operation}: {message}", code, message);
    }

    /// <summary>The general mapping of virErrorNumber (and errno for system errors) to a kind.</summary>
    internal static HypervisorErrorKind Map(int code, int int1 = 0) => code switch
    {
        VirErrorCode.NoDomain => HypervisorErrorKind.DomainNotFound,
        VirErrorCode.NoDomainSnapshot => HypervisorErrorKind.SnapshotNotFound,
        VirErrorCode.NoDomainCheckpoint => HypervisorErrorKind.CheckpointNotFound,
        VirErrorCode.NoConnect or VirErrorCode.InvalidConn or VirErrorCode.Rpc or VirErrorCode.AuthFailed => HypervisorErrorKind.ConnectionFailed,
        VirErrorCode.OperationInvalid or VirErrorCode.SnapshotRevertRisky => HypervisorErrorKind.InvalidDomainState,
        VirErrorCode.BlockCopyActive => HypervisorErrorKind.BlockJobActive,
        VirErrorCode.AgentUnresponsive or VirErrorCode.AgentUnsynced => HypervisorErrorKind.AgentUnavailable,
        VirErrorCode.DeviceMissing => HypervisorErrorKind.DiskNotFound,
        VirErrorCode.InvalidArg or VirErrorCode.XmlError or VirErrorCode.XmlDetail or VirErrorCode.XmlInvalidSchema
            or VirErrorCode.ConfigUnsupported or VirErrorCode.ArgumentUnsupported or VirErrorCode.DomExist => HypervisorErrorKind.InvalidArgument,
        VirErrorCode.SystemError when int1 == VirErrorCode.Enospc => HypervisorErrorKind.NoSpace,
        _ => HypervisorErrorKind.OperationFailed,
    };
}
