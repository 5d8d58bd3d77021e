namespace Orchestrator.Hypervisor.Simulated;

/// <summary>Timings and faults of a simulated host.</summary>
public sealed class SimulatedOptions
{
    /// <summary>Host name reported by the simulated hypervisor.</summary>
    public string HostName { get; set; } = "sim-01";

    /// <summary>The simulated machine's memory (KiB; free memory is this minus the running domains').</summary>
    public long MemoryKiB { get; set; } = 256L * 1024 * 1024;

    /// <summary>The simulated machine's logical CPUs.</summary>
    public int Cpus { get; set; } = 64;

    /// <summary>Latency of every control call (list, get, define...).</summary>
    public TimeSpan CallLatency { get; set; } = TimeSpan.Zero;

    /// <summary>Time an external snapshot takes.</summary>
    public TimeSpan SnapshotLatency { get; set; } = TimeSpan.FromMilliseconds(5);

    /// <summary>Time from the start of an active commit to READY.</summary>
    public TimeSpan CommitReadyLatency { get; set; } = TimeSpan.FromMilliseconds(2);

    /// <summary>Time from pivot to COMPLETED.</summary>
    public TimeSpan PivotLatency { get; set; } = TimeSpan.FromMilliseconds(20);

    /// <summary>Pause a running VM sees while an internal snapshot saves its memory.</summary>
    public TimeSpan InternalSnapshotPause { get; set; } = TimeSpan.FromMilliseconds(10);

    /// <summary>Simulated copy throughput in bytes per second; 0 copies instantly.</summary>
    public long CopyBytesPerSecond { get; set; }

    /// <summary>Directory of the images of the seeded VMs (<see cref="SimulatedHypervisor.SeedDemo"/>, <see cref="SimulatedHypervisor.SeedFleet"/>).</summary>
    public string ImageDirectory { get; set; } = "/var/lib/libvirt/images";

    /// <summary>
    /// Off (the default, for unit tests and the fleet-scale benchmark): images exist only in memory. On (the demo):
    /// every image the host creates (seeded disks, templates, overlays, copies, restores) is also written as a real
    /// sparse file at its path, as long as the host reports it, and deleted with it (see SimulatedImageFiles).
    /// </summary>
    public bool WriteImageFiles { get; set; }

    /// <summary>Free bytes reported for any path.</summary>
    public long FreeSpaceBytes { get; set; } = 1L << 40;

    /// <summary>What a running domain's serial console shows (console probes of test restores).</summary>
    public string ConsoleText { get; set; } = "simulated guest: booted\n";
}

/// <summary>Operations of the simulated hypervisor that a fault can be injected into.</summary>
public enum SimulatedOperation
{
    ListDomains,
    GetDomain,
    CreateExternalSnapshot,
    StartActiveCommit,
    WaitForBlockJobReady,
    Pivot,
    AbortBlockJob,
    CreateInternalSnapshot,
    RevertInternalSnapshot,
    DeleteInternalSnapshot,
    Freeze,
    Thaw,
    Copy,
    Check,
    Commit,
    CreateImage,
    DeleteImage,
    BackupJob,

    /// <summary>Guest agent calls: ping and commands (a fault is what the agent or libvirt answered).</summary>
    GuestAgent,
}
