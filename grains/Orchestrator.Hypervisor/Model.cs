namespace Orchestrator.Hypervisor;

/// <summary>Power state of a domain, as libvirt reports it (virDomainState).</summary>
public enum DomainPowerState
{
    NoState = 0,
    Running = 1,
    Blocked = 2,
    Paused = 3,
    ShuttingDown = 4,
    ShutOff = 5,
    Crashed = 6,
    PmSuspended = 7,
}

/// <summary>One image below the active layer of a disk, top to bottom.</summary>
public sealed record DiskLayer(string Path, string Format);

/// <summary>A disk of a domain: its target (vda), the active source file, its format and the backing chain below it.</summary>
public sealed record DomainDisk(string Target, string SourcePath, string Format, IReadOnlyList<DiskLayer> BackingChain)
{
    /// <summary>Number of images in the chain including the active one.</summary>
    public int ChainDepth => 1 + BackingChain.Count;

    /// <summary>
    /// False when the chain goes on below <see cref="BackingChain"/> with a layer that cannot be named (not a file, or
    /// without a format): such a disk cannot be copied or committed without guessing.
    /// </summary>
    public bool ChainDescribed { get; init; } = true;
}

public sealed record DomainInfo(
    string Name,
    Guid Uuid,
    DomainPowerState State,
    IReadOnlyList<DomainDisk> Disks,
    IReadOnlyDictionary<string, string> Labels,
    long MemoryKiB,
    int VirtualCpus)
{
    public bool IsActive => State is DomainPowerState.Running or DomainPowerState.Paused or DomainPowerState.Blocked;
}

public sealed record HypervisorFacts(string HostName, string Uri, string DriverName, string LibvirtVersion, string HypervisorVersion);

/// <summary>
/// What the host machine has: its memory and free memory (KiB, libvirt's virNodeGetInfo and virNodeGetFreeMemory) and
/// its logical CPUs.
/// </summary>
public sealed record NodeCapacity(long MemoryKiB, long FreeMemoryKiB, int Cpus);

/// <summary>Where the overlay of one disk goes in a disk-only external snapshot.</summary>
public sealed record OverlaySpec(string Target, string OverlayPath);

public enum BlockJobKind
{
    Unknown = 0,
    Pull = 1,
    Copy = 2,
    Commit = 3,
    ActiveCommit = 4,
    Backup = 5,
}

public sealed record BlockJobInfo(string Target, BlockJobKind Kind, long Current, long End, bool Ready);

public sealed record InternalSnapshotInfo(
    string Name,
    DateTimeOffset CreatedAt,
    bool HasMemory,
    DomainPowerState StateAtSnapshot,
    string? Description)
{
    /// <summary>Bytes of saved VM state (memory) the snapshot holds in this image; 0 when unknown or disk-only. Set by image listings.</summary>
    public long VmStateSize { get; init; }
}

/// <summary>What state a domain is left in after a revert.</summary>
public enum RevertTarget
{
    /// <summary>As the snapshot was taken (running if it holds memory of a running guest).</summary>
    AsSaved = 0,
    Running = 1,
    Paused = 2,
}

public enum DomainEventKind
{
    Lifecycle = 0,
    BlockJob = 1,
}

/// <summary>virDomainEventType values for lifecycle events.</summary>
public enum LifecycleEventType
{
    Defined = 0,
    Undefined = 1,
    Started = 2,
    Suspended = 3,
    Resumed = 4,
    Stopped = 5,
    Shutdown = 6,
    PmSuspended = 7,
    Crashed = 8,
}

/// <summary>virConnectDomainEventBlockJobStatus values.</summary>
public enum BlockJobEventStatus
{
    Completed = 0,
    Failed = 1,
    Canceled = 2,
    Ready = 3,
}

/// <summary>An event from the hypervisor. Lifecycle events carry Lifecycle and Detail; block-job events Target, Job and Status.</summary>
public sealed record DomainEvent(
    string Domain,
    DomainEventKind Kind,
    DateTimeOffset At,
    LifecycleEventType? Lifecycle = null,
    int Detail = 0,
    string? Target = null,
    BlockJobKind? Job = null,
    BlockJobEventStatus? Status = null);

/// <summary>A command run in a guest through its agent: exit code and (bounded) output.</summary>
public sealed record GuestCommandResult(int ExitCode, string Output);
