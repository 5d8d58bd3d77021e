using System.Globalization;
using Grpc.Core;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Errors;
using Orchestrator.Cli.Infrastructure;

namespace Orchestrator.Cli.Commands;

/// <summary>
/// Follows one run over <c>WatchBackup</c> until it ends. The server sends the run at once and then at
/// every change; --timeout bounds the wait for that first answer only, since a run can take hours.
/// </summary>
internal static class BackupFollower
{
    /// <summary>How often a live view is redrawn while no update arrives, so its elapsed time keeps counting.</summary>
    public static readonly TimeSpan TickInterval = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Calls <paramref name="onUpdate"/> with every run the server sends, and <paramref name="onTick"/> (when
    /// given) with the latest run every <see cref="TickInterval"/> without an update. Returns the ended run.
    /// </summary>
    public static async Task<BackupRun> FollowAsync(
        CommandContext context,
        RunKey key,
        Action<BackupRun> onUpdate,
        Action<BackupRun>? onTick,
        CancellationToken cancellationToken)
    {
        var client = new BackupService.BackupServiceClient(context.CallInvoker);
        using var firstAnswer = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        firstAnswer.CancelAfter(context.Settings.Timeout);
        try
        {
            using AsyncServerStreamingCall<WatchBackupResponse> call = client.WatchBackup(
                new WatchBackupRequest { Key = key.ToString() }, new CallOptions(cancellationToken: firstAnswer.Token));
            BackupRun? latest = null;
            Task<bool> next = call.ResponseStream.MoveNext(firstAnswer.Token);
            while (true)
            {
                if (onTick is not null && latest is not null && !next.IsCompleted)
                {
                    Task tick = Task.Delay(TickInterval, context.Clock, cancellationToken);
                    if (await Task.WhenAny(next, tick) == tick)
                    {
                        await tick;
                        onTick(latest);
                        continue;
                    }
                }

                if (!await next)
                {
                    throw new CliException(
                        ExitCodes.Unavailable,
                        $"the server closed the watch of {key} before the run ended; "
                        + $"run '{CliApp.CommandName} backup watch {key}' to follow it again");
                }

                if (latest is null)
                {
                    // The first answer came: from now on only Ctrl+C stops the watch.
                    firstAnswer.CancelAfter(Timeout.InfiniteTimeSpan);
                }

                latest = call.ResponseStream.Current.Run
                    ?? throw new CliException(ExitCodes.Internal, $"the server sent an update without a run for {key}");
                onUpdate(latest);
                if (HasEnded(latest))
                {
                    return latest;
                }

                next = call.ResponseStream.MoveNext(firstAnswer.Token);
            }
        }
        catch (Exception exception) when (!cancellationToken.IsCancellationRequested
            && firstAnswer.IsCancellationRequested
            && exception is OperationCanceledException or RpcException { StatusCode: StatusCode.Cancelled })
        {
            throw new CliException(
                ExitCodes.Unavailable,
                $"no answer from {context.Settings.Endpoint.OriginalString} within "
                + $"{context.Settings.Timeout.TotalSeconds.ToString("0.###", CultureInfo.InvariantCulture)} s (raise --timeout to wait longer)");
        }
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
