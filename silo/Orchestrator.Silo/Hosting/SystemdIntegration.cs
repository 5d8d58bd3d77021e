using Microsoft.Extensions.Hosting.Systemd;

namespace Orchestrator.Silo.Hosting;

/// <summary>
/// The silo as a systemd service (Type=notify): READY=1 once the host has started (the Orleans silo is an active
/// member, Kestrel listens), STOPPING=1 when a stop begins, and log lines in the journal's format.
/// </summary>
public static class SystemdIntegration
{
    private const string NotifySocket = "NOTIFY_SOCKET";

    public static WebApplicationBuilder AddSystemdIntegration(this WebApplicationBuilder builder)
    {
        // Acts only when the parent process is systemd (or the silo is PID 1 of a container with NOTIFY_SOCKET).
        builder.Host.UseSystemd();
        if (!SystemdHelpers.IsSystemdService() && !string.IsNullOrEmpty(Environment.GetEnvironmentVariable(NotifySocket)))
        {
            // sd_notify's own contract: a process given NOTIFY_SOCKET reports there, whoever started it (a supervisor
            // between systemd and the silo with NotifyAccess=all, a test). The log format stays the console's.
            builder.Services.AddSingleton<ISystemdNotifier, SystemdNotifier>();
            builder.Services.AddSingleton<IHostLifetime, SystemdLifetime>();
        }

        return builder;
    }
}
