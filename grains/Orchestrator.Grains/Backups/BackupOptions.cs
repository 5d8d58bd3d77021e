using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.Backups;

/// <summary>Where backups may go and how the workflow behaves (section Orchestrator:Backup).</summary>
public sealed class BackupOptions
{
    /// <summary>Backup targets must lie under one of these directories (no path traversal out of them).</summary>
    public List<string> Roots { get; set; } = [];

    /// <summary>Target used when a request names none; must lie under a root.</summary>
    public string? DefaultTarget { get; set; }

    /// <summary>
    /// A group (name or number) that may read backup sets and restored images: directories 0750 and files 0640 owned by
    /// it. Unset: owner only (0700 / 0600).
    /// </summary>
    public string? FileGroup { get; set; }

    /// <summary>
    /// Directories a restore may write its images to besides the original disks' own directories (absolute; a
    /// requested image directory must lie under one, symbolic links resolved).
    /// </summary>
    public List<string> RestoreRoots { get; set; } = [];

    /// <summary>How many finished runs each VM keeps in its history.</summary>
    public int HistoryLimit { get; set; } = 50;

    /// <summary>Attempts to pivot a READY commit before the run gives up on that try (with backoff).</summary>
    public int PivotAttempts { get; set; } = 5;

    /// <summary>
    /// How many disks of one VM are copied at the same time (without a bandwidth limit; with one, the disks are copied
    /// one after the other, since the limit is the run's whole budget).
    /// </summary>
    public int ParallelCopies { get; set; } = 4;

    /// <summary>
    /// Retry budget of the commit and clean-up steps: after this many failed tries (across restarts) the run ends
    /// Failed, leaving the VM on whatever image it safely runs on (an overlay it still runs on stays, and is reported).
    /// </summary>
    public int FinishAttempts { get; set; } = 10;

    /// <summary>Retry budget in time: the run ends Failed once its commit or clean-up has failed for this long.</summary>
    public TimeSpan FinishRetryBudget { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>First wait between tries of a failed commit or clean-up; doubles each try, at most one minute.</summary>
    public TimeSpan FinishRetryDelay { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// Live-backup workflows this silo runs at once, whatever budgets policies set: a run started beyond it waits,
    /// before it touches the VM, at step Queued (first come, first served) until a run ends. A run resumed past its
    /// overlays takes a slot without waiting (its VM is on an overlay: finished first) and counts against the bound.
    /// </summary>
    public int MaxConcurrentPerSilo { get; set; } = 64;

    /// <summary>Test restores this silo restores and boots at once (each boots a throwaway VM); more wait their turn.</summary>
    public int MaxConcurrentTestRestores { get; set; } = 1;

    /// <summary>
    /// A host takes a test restore chosen by capacity only if its free memory (libvirt's, of the machine) minus the
    /// throwaway VM's memory leaves at least this much (MiB).
    /// </summary>
    public int TestRestoreMemoryReserveMiB { get; set; } = 512;

    /// <summary>
    /// A host takes a test restore chosen by capacity only if the vCPUs of its running domains plus the throwaway's stay
    /// within its CPUs times this.
    /// </summary>
    public double TestRestoreCpuOvercommit { get; set; } = 4;

    /// <summary>How long a run waits at step Queued for a slot before it ends Failed (it touched nothing).</summary>
    public TimeSpan QueueTimeout { get; set; } = TimeSpan.FromHours(1);

    /// <summary>Period of the reconcile that finishes or rolls back interrupted runs.</summary>
    public TimeSpan ReconcileInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Crash testing only: SIGKILL this silo process at this point ("Preflight" = the operation lock taken in memory,
    /// nothing persisted yet; "OverlayActive" = the overlays active, the run persisted at Quiesce; "Copying" = after
    /// the first disk's copy; "Committing" = a commit READY, not pivoted).
    /// </summary>
    public string? KillAt { get; set; }

    /// <summary>The mode and group for what backups and restores create (<see cref="FileGroup"/> looked up now).</summary>
    public FilePrivacy Privacy() =>
        FileGroup is not { Length: > 0 } group
            ? FilePrivacy.Private
            : SafeFiles.LookupGroup(group) is { } gid
                ? FilePrivacy.ForGroup(gid)
                : throw new OrchestratorException(ErrorCode.FailedPrecondition, $"Orchestrator:Backup:FileGroup: no group named '{group}' on this host");
}
