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

    /// <summary>TLS and authentication of the gRPC port (section Orchestrator:Security).</summary>
    public SecuritySettings Security { get; set; } = new();

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

    /// <summary>With the simulated hypervisor: a fleet of generated VMs and the host's copy speed (section Host:Simulated).</summary>
    public SimulatedHostSettings Simulated { get; set; } = new();

    /// <summary>Longest a libvirt call may take before it fails (libvirtd hung); keepalive closes a dead connection.</summary>
    public TimeSpan CallTimeout { get; set; } = TimeSpan.FromSeconds(30);
}

/// <summary>
/// A simulated host seeded with a fleet (for the fleet-scale benchmark and <c>deploy/local/cluster.sh up --simulated</c>):
/// <see cref="Vms"/> running VMs vm-00001..., each with two qcow2 disks: vda a linked clone of a template shared by the
/// host's VMs (a 2-image chain, as VMs cloned from one golden image), vdb a standalone image. Labels fleet=scale and
/// tier=web (odd) or tier=db (even). Only with a simulated:// <see cref="HostSettings.Uri"/>.
/// </summary>
public sealed class SimulatedHostSettings
{
    public const int MaxVms = 100_000;

    /// <summary>VMs to seed; 0 seeds none.</summary>
    public int Vms { get; set; }

    /// <summary>Virtual size of each disk; a quarter of it is allocated (the template: an eighth).</summary>
    public long DiskSizeBytes { get; set; } = 1L << 30;

    /// <summary>
    /// Copy throughput of the host in bytes per second, per copy (copies run side by side); 0 copies instantly.
    /// The default (8 GiB/s: about 50 ms per disk of the default size) keeps orchestration the dominant cost.
    /// </summary>
    public long CopyBytesPerSecond { get; set; } = 8L << 30;

    /// <summary>
    /// Empty (the default): the simulated host's images exist only in memory. A directory (absolute; the demo sets
    /// it): the seeded VMs' images live there, and every image the host creates (overlays, backup copies, restores)
    /// is also written as a real sparse file of the size the host reports, so every path it names exists.
    /// </summary>
    public string ImageFiles { get; set; } = "";
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

    /// <summary>
    /// Grain storage calls this silo makes at once; more wait in the silo, in order. 0: the PostgreSQL connection
    /// pool's size (Maximum Pool Size of the connection string; 16 for SQLite).
    /// </summary>
    public int MaxConcurrentStorageCalls { get; set; }

    /// <summary>How long a grain storage call waits for its turn before it fails (it was then not made).</summary>
    public TimeSpan StorageWaitTimeout { get; set; } = TimeSpan.FromMinutes(5);
}

public sealed class ClusterSettings
{
    public string ClusterId { get; set; } = "orchestrator";

    public string ServiceId { get; set; } = "orchestrator";

    /// <summary>
    /// Silo-to-silo port, bound to <see cref="AdvertisedAddress"/> only. There is no Orleans gateway (client) port:
    /// every caller comes through gRPC, where TLS, tokens and roles apply.
    /// </summary>
    public int SiloPort { get; set; } = 11111;

    /// <summary>The address other silos reach this one at, and the only address the silo port listens on; loopback by default.</summary>
    public string AdvertisedAddress { get; set; } = "127.0.0.1";
}

public sealed class EndpointSettings
{
    /// <summary>Address Kestrel binds gRPC and HTTP to.</summary>
    public string BindAddress { get; set; } = "127.0.0.1";

    /// <summary>gRPC port: HTTP/2, over TLS when Security:Tls is set, else without TLS (h2c).</summary>
    public int GrpcPort { get; set; } = 7070;

    /// <summary>HTTP/1.1 port for health endpoints and the Orleans dashboard.</summary>
    public int HttpPort { get; set; } = 7071;

    /// <summary>
    /// The Orleans dashboard at /dashboard on the HTTP port (never on the gRPC port). Unset: on for a loopback
    /// <see cref="BindAddress"/>, off otherwise (it has no authentication); true or false decides explicitly.
    /// </summary>
    public bool? Dashboard { get; set; }

    /// <summary>
    /// Prometheus metrics at /metrics on the HTTP port (never on the gRPC port). Unset: on for a loopback
    /// <see cref="BindAddress"/>, off otherwise (it has no authentication and names hosts and VMs); true or false decides explicitly.
    /// </summary>
    public bool? Metrics { get; set; }

    /// <summary>Largest gRPC request message accepted, in bytes (larger: RESOURCE_EXHAUSTED before any handler runs).</summary>
    public int MaxRequestBytes { get; set; } = 1024 * 1024;

    /// <summary>Largest gRPC response message sent, in bytes (the CLI accepts up to 64 MiB).</summary>
    public int MaxResponseBytes { get; set; } = 64 * 1024 * 1024;

    /// <summary>Whether the dashboard is served: <see cref="Dashboard"/>, or by default only on a loopback bind address.</summary>
    internal bool DashboardEnabled =>
        Dashboard ?? (IPAddress.TryParse(BindAddress, out var address) && IPAddress.IsLoopback(address));

    /// <summary>Whether /metrics is served: <see cref="Metrics"/>, or by default only on a loopback bind address.</summary>
    internal bool MetricsEnabled =>
        Metrics ?? (IPAddress.TryParse(BindAddress, out var address) && IPAddress.IsLoopback(address));

    internal IPAddress ParsedBindAddress => IPAddress.Parse(BindAddress);
}

/// <summary>
/// Who may call the gRPC API. Without a tokens file and client certificates the API is open, which is allowed
/// only on a loopback <see cref="EndpointSettings.BindAddress"/> (or with <see cref="AllowInsecureRemote"/>).
/// Secrets never live here: only paths to files and the hashes inside them.
/// </summary>
public sealed class SecuritySettings
{
    public TlsSettings Tls { get; set; } = new();

    /// <summary>
    /// File of bearer tokens, one per line: <c>sha256:&lt;hex of the token's SHA-256&gt; &lt;role&gt; &lt;name&gt;</c>;
    /// <c>#</c> comments and blank lines allowed. Re-read when it changes.
    /// </summary>
    public string? TokensFile { get; set; }

    /// <summary>
    /// Roles of client certificates (mutual TLS, needs <see cref="TlsSettings.ClientCaPath"/>): key = the
    /// certificate's subject common name (CN), value = viewer, operator or admin.
    /// </summary>
    public Dictionary<string, string> ClientCertificates { get; set; } = [];

    /// <summary>Allows gRPC on a non-loopback address without TLS and authentication. Never in production.</summary>
    public bool AllowInsecureRemote { get; set; }
}

public sealed class TlsSettings
{
    /// <summary>The server certificate (PEM; may carry intermediates after it).</summary>
    public string? CertificatePath { get; set; }

    /// <summary>The server certificate's private key (PEM, unencrypted).</summary>
    public string? KeyPath { get; set; }

    /// <summary>CA certificate(s) (PEM) that client certificates must chain to; enables mutual TLS.</summary>
    public string? ClientCaPath { get; set; }
}
