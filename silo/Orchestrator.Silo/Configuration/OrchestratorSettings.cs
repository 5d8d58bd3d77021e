using System.Net;

namespace Orchestrator.Silo.Configuration;

/// <summary>The silo's settings: section "Orchestrator" of appsettings.json, or environment variables
/// such as <c>Orchestrator__Host__Name</c>.</summary>
public sealed class OrchestratorSettings
{
    public const string Section = "Orchestrator";

    public HostSettings Host { get; set; } = new();

    public PersistenceSettings Persistence { get; set; } = new();

    public ClusterSettings Cluster { get; set; } = new();

    public EndpointSettings Endpoints { get; set; } = new();

    /// <summary>How often the host's inventory is re-read from the hypervisor (besides on its events).</summary>
    public TimeSpan InventorySyncInterval { get; set; } = TimeSpan.FromSeconds(30);
}

public sealed class HostSettings
{
    /// <summary>The hypervisor host this silo serves (the first segment of every VM key).</summary>
    public string Name { get; set; } = "";

    /// <summary>
    /// libvirt connection URI (qemu:///system, qemu+unix:///system?socket=..., test:///default) or
    /// simulated://NAME for the in-memory simulated hypervisor.
    /// </summary>
    public string Uri { get; set; } = "";

    /// <summary>With the simulated hypervisor: seed it with the demo VMs.</summary>
    public bool SeedDemo { get; set; }
}

public enum PersistenceMode
{
    /// <summary>One silo, localhost clustering, grain state in a SQLite file, reminders in memory.</summary>
    Embedded,

    /// <summary>PostgreSQL for membership, grain state and reminders.</summary>
    Cluster,
}

public sealed class PersistenceSettings
{
    public PersistenceMode Mode { get; set; } = PersistenceMode.Embedded;

    /// <summary>Embedded mode: the SQLite file (relative paths are relative to the working directory).</summary>
    public string SqlitePath { get; set; } = "data/orchestrator.db";

    /// <summary>Cluster mode: Npgsql connection string.</summary>
    public string? PostgresConnectionString { get; set; }

    /// <summary>Apply our SQL schema (idempotent) at start.</summary>
    public bool ApplySchema { get; set; } = true;
}

public sealed class ClusterSettings
{
    public string ClusterId { get; set; } = "orchestrator";

    public string ServiceId { get; set; } = "orchestrator";

    public int SiloPort { get; set; } = 11111;

    public int GatewayPort { get; set; } = 30000;

    /// <summary>The address other silos reach this one at (cluster mode); loopback by default.</summary>
    public string AdvertisedAddress { get; set; } = "127.0.0.1";
}

public sealed class EndpointSettings
{
    /// <summary>Address Kestrel binds gRPC and HTTP to.</summary>
    public string BindAddress { get; set; } = "127.0.0.1";

    /// <summary>gRPC (HTTP/2 without TLS) port.</summary>
    public int GrpcPort { get; set; } = 7070;

    /// <summary>HTTP/1.1 port for health endpoints and the Orleans dashboard.</summary>
    public int HttpPort { get; set; } = 7071;

    public bool Dashboard { get; set; } = true;

    internal IPAddress ParsedBindAddress => IPAddress.Parse(BindAddress);
}
