using System.Globalization;
using Grpc.Core;
using Orchestrator.Cli.Errors;
using Orchestrator.Cli.Infrastructure;

namespace Orchestrator.Cli.Commands;

/// <summary>
/// Follows a server stream of snapshots of one run until a snapshot says the run ended (backup runs, policy runs).
/// The server sends the run at once and then at every change; --timeout bounds the wait for that first answer only,
/// since a run can take hours.
/// </summary>
internal static class StreamFollower
{
    /// <summary>How often a live view is redrawn while no update arrives, so its elapsed time keeps counting.</summary>
    public static readonly TimeSpan TickInterval = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Opens the stream with <paramref name="open"/> and calls <paramref name="onUpdate"/> with every run it sends, and
    /// <paramref name="onTick"/> (when given) with the latest run every <see cref="TickInterval"/> without an update.
    /// Returns the ended run. <paramref name="what"/> names the run in messages ("backup kvm-01/web-1/b-..."), and
    /// <paramref name="followAgain"/> is the command that follows it again after the stream broke.
    /// </summary>
    public static async Task<TRun> FollowAsync<TResponse, TRun>(
        CommandContext context,
        Func<CallOptions, AsyncServerStreamingCall<TResponse>> open,
        Func<TResponse, TRun?> runOf,
        Func<TRun, bool> hasEnded,
        string what,
        string followAgain,
        Action<TRun> onUpdate,
        Action<TRun>? onTick,
        CancellationToken cancellationToken)
        where TRun : class
    {
        using var firstAnswer = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        firstAnswer.CancelAfter(context.Settings.Timeout);
        try
        {
            using AsyncServerStreamingCall<TResponse> call = open(new CallOptions(cancellationToken: firstAnswer.Token));
            TRun? latest = null;
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
                        $"the server closed the watch of {what} before the run ended; run '{CliApp.CommandName} {followAgain}' to follow it again");
                }

                if (latest is null)
                {
                    // The first answer came: from now on only Ctrl+C stops the watch.
                    firstAnswer.CancelAfter(Timeout.InfiniteTimeSpan);
                }

                latest = runOf(call.ResponseStream.Current)
                    ?? throw new CliException(ExitCodes.Internal, $"the server sent an update without a run for {what}");
                onUpdate(latest);
                if (hasEnded(latest))
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
}
