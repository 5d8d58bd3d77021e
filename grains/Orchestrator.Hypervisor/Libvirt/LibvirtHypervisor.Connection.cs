using Orchestrator.Hypervisor.Libvirt.Native;

namespace Orchestrator.Hypervisor.Libvirt;

/// <summary>
/// Losing libvirtd and getting it back. The connection sends keepalives (<see cref="KeepAliveInterval"/> seconds,
/// <see cref="KeepAliveCount"/> unanswered ones close it): a libvirtd that exits closes it at once, a hung one
/// after about interval x (count + 1) seconds, and either way every call blocked on it returns with an error. The
/// close callback marks the driver unreachable (calls fail fast, <see cref="Unreachable"/> says why) and a
/// reconnect loop opens a new connection with backoff (1 s doubling to 30 s), each attempt bounded by
/// <see cref="CallTimeout"/>, and registers the event callbacks again on it.
/// </summary>
public sealed partial class LibvirtHypervisor : IHypervisorHealth
{
    /// <summary>Seconds between keepalive probes on the connection.</summary>
    public const int KeepAliveInterval = 3;

    /// <summary>Unanswered probes after which libvirt closes the connection.</summary>
    public const int KeepAliveCount = 3;

    private static readonly TimeSpan MaxReconnectDelay = TimeSpan.FromSeconds(30);

    private int _reconnecting;
    private string? _unreachable;

    /// <summary>Longest any libvirt call may take before the caller gets a HypervisorException (the call itself is left to end).</summary>
    public TimeSpan CallTimeout { get; set; } = TimeSpan.FromSeconds(30);

    public string? Unreachable => _connectionClosed ? Volatile.Read(ref _unreachable) ?? $"the connection to {Uri} is closed" : null;

    /// <summary>Opens a connection with keepalive on (blocking; runs on a pool thread).</summary>
    private static ConnectHandle Open(string uri)
    {
        var conn = LibvirtNative.virConnectOpen(uri);
        if (conn.IsInvalid)
        {
            var error = LibvirtErrors.Last($"virConnectOpen({uri})", _ => HypervisorErrorKind.ConnectionFailed);
            conn.Dispose();
            throw error;
        }

        // Remote drivers (unix socket included) support keepalive; a local one (test://) answers -1: no probes needed.
        if (LibvirtNative.virConnectSetKeepAlive(conn, KeepAliveInterval, KeepAliveCount) < 0)
        {
            LibvirtNative.virResetLastError();
        }

        return conn;
    }

    /// <summary>Runs a blocking libvirt call, bounded by <see cref="CallTimeout"/>.</summary>
    private async Task<T> BoundAsync<T>(Task<T> call, string? what = null)
    {
        try
        {
            return await call.WaitAsync(CallTimeout).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // The call stays blocked until libvirt answers or keepalive closes the connection; observe its end.
            _ = call.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
            Log.CallTimedOut(_logger, Uri, what ?? "libvirt call", CallTimeout.TotalSeconds);
            throw new HypervisorException(
                HypervisorErrorKind.ConnectionFailed,
                $"libvirt at {Uri} did not answer within {CallTimeout.TotalSeconds:F0} s (libvirtd hung or overloaded?)");
        }
    }

    private void StartReconnect(string why)
    {
        Volatile.Write(ref _unreachable, why);
        if (Volatile.Read(ref _disposed) != 0 || Interlocked.Exchange(ref _reconnecting, 1) != 0)
        {
            return;
        }

        _ = Task.Run(ReconnectAsync);
    }

    private async Task ReconnectAsync()
    {
        var delay = TimeSpan.FromSeconds(1);
        var attempt = 0;
        while (Volatile.Read(ref _disposed) == 0)
        {
            await Task.Delay(delay).ConfigureAwait(false);
            attempt++;
            var open = Task.Run(() =>
            {
                var conn = Open(Uri);
                try
                {
                    RegisterCallbacks(conn);
                    return conn;
                }
                catch
                {
                    conn.Dispose();
                    throw;
                }
            });
            try
            {
                var conn = await open.WaitAsync(CallTimeout).ConfigureAwait(false);
                var old = _conn;
                _conn = conn;
                _connectionClosed = false;
                Volatile.Write(ref _unreachable, null);
                Interlocked.Exchange(ref _reconnecting, 0);
                Log.Reconnected(_logger, Uri, attempt);

                // The old connection is dead: closing it only frees it (libvirt drops its callbacks with it).
                _ = Task.Run(old.Dispose);
                return;
            }
            catch (Exception e) when (e is TimeoutException or HypervisorException)
            {
                if (e is TimeoutException)
                {
                    // A hung libvirtd accepts the socket and never answers: drop the connection if it ever opens.
                    _ = open.ContinueWith(static t => t.Result.Dispose(), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
                }

                var reason = e is TimeoutException ? $"no answer within {CallTimeout.TotalSeconds:F0} s" : e.Message;
                Volatile.Write(ref _unreachable, $"reconnecting to {Uri} (attempt {attempt}): {reason}");
                Log.ReconnectFailed(_logger, Uri, attempt, reason);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, MaxReconnectDelay.Ticks));
            }
        }
    }
}
