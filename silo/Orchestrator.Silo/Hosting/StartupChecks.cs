using System.Net;
using System.Net.Sockets;
using Orchestrator.Silo.Configuration;

namespace Orchestrator.Silo.Hosting;

/// <summary>
/// What the silo needs from the machine, checked before anything starts, so that a port in use, an address that
/// is not this machine's or an unusable database directory stops the start with one line naming the setting and
/// the reason (exit code 2) instead of a stack trace from deep inside Kestrel or Orleans. <see cref="Describe"/>
/// translates the same failures when they happen anyway (a port taken between the check and the bind).
/// </summary>
public static class StartupChecks
{
    private const string P = OrchestratorSettings.Section;

    /// <summary>Throws <see cref="SettingsException"/> with every problem found.</summary>
    public static void Run(OrchestratorSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var errors = new List<string>();
        var bind = IPAddress.Parse(settings.Endpoints.BindAddress);
        CheckPort(errors, $"{P}:Endpoints:GrpcPort", $"{P}:Endpoints:BindAddress", bind, settings.Endpoints.GrpcPort);
        CheckPort(errors, $"{P}:Endpoints:HttpPort", $"{P}:Endpoints:BindAddress", bind, settings.Endpoints.HttpPort);
        var siloAddress = settings.Persistence.Mode == PersistenceMode.Cluster ? IPAddress.Parse(settings.Cluster.AdvertisedAddress) : IPAddress.Loopback;
        CheckPort(errors, $"{P}:Cluster:SiloPort", $"{P}:Cluster:AdvertisedAddress", siloAddress, settings.Cluster.SiloPort);
        if (settings.Persistence.Mode == PersistenceMode.Embedded)
        {
            CheckSqlitePath(errors, settings.Persistence.SqlitePath);
        }

        if (errors.Count > 0)
        {
            throw new SettingsException(errors);
        }
    }

    /// <summary>One line for a start-up failure this class knows (a port in use, an address not of this machine), else null.</summary>
    public static string? Describe(Exception exception, OrchestratorSettings? settings)
    {
        if (settings is null)
        {
            return null;
        }

        for (var e = exception; e is not null; e = e.InnerException)
        {
            var socketError = e switch
            {
                SocketException s => s.SocketErrorCode,
                Microsoft.AspNetCore.Connections.AddressInUseException => SocketError.AddressAlreadyInUse,
                _ => (SocketError?)null,
            };
            if (socketError is null)
            {
                continue;
            }

            var port = PortNamed(exception, settings);
            return socketError switch
            {
                SocketError.AddressAlreadyInUse => $"{port ?? "a port"} is already in use by another process: {exception.Message}",
                SocketError.AddressNotAvailable => $"{P}:Endpoints:BindAddress or {P}:Cluster:AdvertisedAddress is not an address of this machine: {exception.Message}",
                SocketError.AccessDenied => $"{port ?? "a port"}: not allowed to listen there (ports below 1024 need privileges): {exception.Message}",
                _ => null,
            };
        }

        return null;
    }

    /// <summary>The setting whose port the failure message names (Kestrel names the address), or the silo port for an Orleans failure.</summary>
    private static string? PortNamed(Exception exception, OrchestratorSettings settings)
    {
        var text = exception.ToString();
        (string Setting, int Port)[] ports =
        [
            ($"{P}:Endpoints:GrpcPort", settings.Endpoints.GrpcPort),
            ($"{P}:Endpoints:HttpPort", settings.Endpoints.HttpPort),
            ($"{P}:Cluster:SiloPort", settings.Cluster.SiloPort),
        ];
        foreach (var (setting, port) in ports)
        {
            if (text.Contains($":{port}", StringComparison.Ordinal))
            {
                return $"{setting} ({port})";
            }
        }

        return text.Contains("Orleans", StringComparison.Ordinal) ? $"{P}:Cluster:SiloPort ({settings.Cluster.SiloPort})" : null;
    }

    private static void CheckPort(List<string> errors, string portSetting, string addressSetting, IPAddress address, int port)
    {
        using var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            socket.Bind(new IPEndPoint(address, port));
            socket.Listen(1);
        }
        catch (SocketException e)
        {
            var error = e.SocketErrorCode switch
            {
                SocketError.AddressAlreadyInUse => $"{portSetting}: port {port} on {address} is already in use by another process",
                SocketError.AddressNotAvailable => $"{addressSetting}: {address} is not an address of this machine ({e.Message})",
                SocketError.AccessDenied => $"{portSetting}: not allowed to listen on port {port} (ports below 1024 need privileges)",
                _ => $"{portSetting}: cannot listen on {address}:{port}: {e.Message}",
            };

            // The gRPC and HTTP ports share the bind address: one line for an address that is not ours.
            if (!errors.Contains(error, StringComparer.Ordinal))
            {
                errors.Add(error);
            }
        }
    }

    private static void CheckSqlitePath(List<string> errors, string sqlitePath)
    {
        const string Key = P + ":Persistence:SqlitePath";
        try
        {
            var path = Path.GetFullPath(sqlitePath);
            if (Directory.Exists(path))
            {
                errors.Add($"{Key}: '{path}' is a directory; name the database file");
                return;
            }

            Directory.CreateDirectory(Path.GetDirectoryName(path)!);

            // Opens (or creates, as SQLite would) the file for writing and closes it: no byte is written.
            using var probe = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            errors.Add($"{Key}: cannot open '{sqlitePath}' for writing: {e.Message}");
        }
    }
}
