using Orchestrator.Api.V1;
using Orchestrator.Cli.Errors;
using Orchestrator.Cli.Infrastructure;

namespace Orchestrator.Cli.Commands;

/// <summary>Follows one backup run over <c>WatchBackup</c> until it ends (see <see cref="StreamFollower"/>).</summary>
internal static class BackupFollower
{
    /// <summary>
    /// Calls <paramref name="onUpdate"/> with every run the server sends, and <paramref name="onTick"/> (when
    /// given) with the latest run every <see cref="StreamFollower.TickInterval"/> without an update. Returns the ended run.
    /// </summary>
    public static Task<BackupRun> FollowAsync(
        CommandContext context,
        RunKey key,
        Action<BackupRun> onUpdate,
        Action<BackupRun>? onTick,
        CancellationToken cancellationToken)
    {
        var client = new BackupService.BackupServiceClient(context.CallInvoker);
        return StreamFollower.FollowAsync(
            context,
            options => client.WatchBackup(new WatchBackupRequest { Key = key.ToString() }, options),
            response => response.Run,
            HasEnded,
            key.ToString(),
            $"backup watch {key}",
            onUpdate,
            onTick,
            cancellationToken);
    }

    public static bool HasEnded(BackupRun run) => run.Step is BackupStep.Completed or BackupStep.Failed;

    /// <summary>The end of a followed run: nothing for Completed, exit 7 with the run's error for Failed.</summary>
    public static void ThrowIfFailed(BackupRun run)
    {
        if (run.Step == BackupStep.Failed)
        {
            string reason = run.Error.Length > 0 ? run.Error : "no error message";
            throw new CliException(ExitCodes.RunFailed, $"backup {run.Key} failed: {reason}");
        }
    }
}
