using System.Net;
using System.Net.Sockets;

namespace Orchestrator.IntegrationTests.Infrastructure;

/// <summary>Locations in the repository, found relative to the test assembly (no absolute paths).</summary>
public static class Repo
{
    public static string Root { get; } = FindRoot();

    /// <summary>Build configuration the tests were built with (Debug or Release).</summary>
    public static string Configuration { get; } =
        new DirectoryInfo(AppContext.BaseDirectory).Parent?.Name is { } c && c != "bin" ? c : "Debug";

    public static string SiloDll => Built("silo/Orchestrator.Silo", "Orchestrator.Silo.dll");

    public static string CliDll => Built("client/Orchestrator.Cli", "orchestrator.dll");

    public static string Script(string relative) => Path.Combine(Root, relative);

    /// <summary>A TCP port free right now on loopback.</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private static string Built(string project, string file)
    {
        var path = Path.Combine(Root, project, "bin", Configuration, "net10.0", file);
        return File.Exists(path) ? path : throw new FileNotFoundException($"{path} is not built; build the solution first", path);
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Orchestrator.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("Orchestrator.sln not found above " + AppContext.BaseDirectory);
    }
}
