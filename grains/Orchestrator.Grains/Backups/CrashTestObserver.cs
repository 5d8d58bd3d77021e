using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Orchestrator.Grains.Workflows;

namespace Orchestrator.Grains.Backups;

/// <summary>
/// Crash tests (Orchestrator:Backup:KillAt): kills this process at a named point of the live-backup workflow, as a
/// power cut would, so a test can prove that the restarted silo finishes or rolls back. The points, as the workflow
/// reaches them: Preflight (before the preflight step, the lock taken in memory only), OverlayActive (after the
/// overlay step, its result not persisted), Copying (a disk copied: with several disks, while the others are copying or
/// not started; with one, before its result is persisted), Committing (a commit READY, before its pivot). The offline
/// copy of a shut-off VM (<see cref="OfflineBackupWorkflow"/>): OfflineCopying (a disk copied, as Copying). The
/// backup-job method (<see cref="IncrementalBackupWorkflow"/>): IncrementalJob (the job started with its checkpoint and
/// its start persisted, QEMU copying), IncrementalCopied (the job's end read and persisted, before verify and manifest).
/// <paramref name="kill"/> replaces the process kill in unit tests (it must stop the workflow as a crash would: no
/// compensation, nothing more persisted).
/// </summary>
internal sealed partial class CrashTestObserver(string? killAt, ILogger logger, Action<string>? kill = null) : IStepObserver
{
    public static readonly IReadOnlyList<string> Points = ["Preflight", "OverlayActive", "Copying", "Committing", "OfflineCopying", "IncrementalJob", "IncrementalCopied"];

    public void BeforeStep(string step)
    {
        if (step == LiveBackupWorkflow.Preflight)
        {
            KillIfAsked("Preflight");
        }
    }

    public void AfterStep(string step)
    {
        if (step == LiveBackupWorkflow.Overlay)
        {
            KillIfAsked("OverlayActive");
        }
        else if (step == IncrementalBackupWorkflow.Job)
        {
            KillIfAsked("IncrementalJob");
        }
    }

    public void Reached(string step, string point, int done, int total)
    {
        if (point == LiveBackupWorkflow.DiskCopied && (done < total || total == 1))
        {
            KillIfAsked("Copying");
        }
        else if (point == LiveBackupWorkflow.CommitReady)
        {
            KillIfAsked("Committing");
        }
        else if (point == OfflineBackupWorkflow.DiskCopied && (done < total || total == 1))
        {
            KillIfAsked("OfflineCopying");
        }
        else if (point == IncrementalBackupWorkflow.JobEnded)
        {
            KillIfAsked("IncrementalCopied");
        }
    }

    private void KillIfAsked(string point)
    {
        if (string.Equals(killAt, point, StringComparison.Ordinal))
        {
            LogKilling(logger, point);
            if (kill is not null)
            {
                kill(point);
                return;
            }

            Process.GetCurrentProcess().Kill();
        }
    }

    [LoggerMessage(Level = LogLevel.Critical, Message = "Crash test: killing this silo at {Point}")]
    private static partial void LogKilling(ILogger logger, string point);
}
