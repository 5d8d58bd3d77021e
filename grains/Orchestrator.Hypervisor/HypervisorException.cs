namespace Orchestrator.Hypervisor;

public enum HypervisorErrorKind
{
    OperationFailed = 0,
    ConnectionFailed,
    DomainNotFound,
    DiskNotFound,
    SnapshotNotFound,
    SnapshotExists,
    FileExists,
    FileNotFound,
    NoBlockJob,
    BlockJobActive,
    BlockJobFailed,
    UnsupportedDiskFormat,
    InvalidDomainState,
    AgentUnavailable,
    NoSpace,
    InvalidArgument,
    ToolFailed,

    /// <summary>An external process or call ran past its time bound and was stopped (its process tree killed).</summary>
    Timeout,

    /// <summary>
    /// The image is the active image or a backing layer of a disk of a domain of the host (running or only defined):
    /// deleting or replacing it would destroy that domain's disk.
    /// </summary>
    ImageInUse,

    /// <summary>The domain has no checkpoint of that name.</summary>
    CheckpointNotFound,

    /// <summary>The domain already has a checkpoint of that name.</summary>
    CheckpointExists,

    /// <summary>Another job (a backup, a migration, a save) runs on the domain.</summary>
    JobActive,
}

/// <summary>A hypervisor error; keeps libvirt's error code and message when libvirt raised it.</summary>
public sealed class HypervisorException : Exception
{
    public HypervisorException(HypervisorErrorKind kind, string message, int? libvirtCode = null, string? libvirtMessage = null, Exception? inner = null)
        : base(message, inner)
    {
        Kind = kind;
        LibvirtCode = libvirtCode;
        LibvirtMessage = libvirtMessage;
    }

    public HypervisorErrorKind Kind { get; }

    /// <summary>virErrorNumber, when libvirt raised the error.</summary>
    public int? LibvirtCode { get; }

    public string? LibvirtMessage { get; }
}
