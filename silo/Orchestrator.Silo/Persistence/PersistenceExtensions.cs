using System.Data.Common;
using Microsoft.Data.Sqlite;
using Npgsql;
using Orchestrator.Grains;
using Orchestrator.Grains.Storage;
using Orchestrator.Silo.Configuration;
using Orleans.Storage;

namespace Orchestrator.Silo.Persistence;

internal static class PersistenceExtensions
{
    /// <summary>ADO.NET invariants Orleans maps to a provider (FACTS: SQLite must be exactly this string).</summary>
    public const string PostgresInvariant = "Npgsql";
    public const string SqliteInvariant = "System.Data.SQLite";

    /// <summary>Membership, grain state and reminders for the configured mode; same grain code either way.</summary>
    public static ISiloBuilder AddOrchestratorPersistence(this ISiloBuilder silo, OrchestratorSettings settings)
    {
        var dataSource = CreateDataSource(settings.Persistence);
        silo.Services.AddSingleton(new OrchestratorDataSource(dataSource, settings.Persistence.Mode));
        var serializer = new MessagePackGrainStorageSerializer();
        if (settings.Persistence.Mode == PersistenceMode.Cluster)
        {
            var cs = WithStatementCache(settings.Persistence.PostgresConnectionString!);
            silo.UseAdoNetClustering(o =>
            {
                o.Invariant = PostgresInvariant;
                o.ConnectionString = cs;
            });
            silo.UseAdoNetReminderService(o =>
            {
                o.Invariant = PostgresInvariant;
                o.ConnectionString = cs;
            });
            silo.AddAdoNetGrainStorage(AdoNetStorage, o =>
            {
                o.Invariant = PostgresInvariant;
                o.DataSource = dataSource;
                o.GrainStorageSerializer = serializer;
            });
            AddBoundedStorage(silo, settings.Persistence, new NpgsqlConnectionStringBuilder(cs).MaxPoolSize);
            // Gateway port 0: no Orleans gateway at all (the API is gRPC only). The silo port listens on the
            // advertised address alone, never on every interface.
            silo.ConfigureEndpoints(
                System.Net.IPAddress.Parse(settings.Cluster.AdvertisedAddress),
                settings.Cluster.SiloPort,
                gatewayPort: 0,
                listenOnAnyHostAddress: false);
        }
        else
        {
            // Loopback only, and gateway port 0: no Orleans gateway (the API is gRPC only).
            silo.UseLocalhostClustering(settings.Cluster.SiloPort, gatewayPort: 0, serviceId: settings.Cluster.ServiceId, clusterId: settings.Cluster.ClusterId);
            silo.UseInMemoryReminderService();
            silo.AddAdoNetGrainStorage(AdoNetStorage, o =>
            {
                o.Invariant = SqliteInvariant;
                o.DataSource = dataSource;
                o.GrainStorageSerializer = serializer;
            });
            AddBoundedStorage(silo, settings.Persistence, SqliteStorageCalls);
        }

        silo.Configure<Orleans.Configuration.ClusterOptions>(o =>
        {
            o.ClusterId = settings.Cluster.ClusterId;
            o.ServiceId = settings.Cluster.ServiceId;
        });
        return silo;
    }

    /// <summary>
    /// The ADO.NET storage's own name; grains use <see cref="StorageNames.Default"/>, which bounds the calls in flight
    /// (<see cref="BoundedGrainStorage"/>). Rows do not carry a provider name: state stored before is read the same.
    /// </summary>
    private const string AdoNetStorage = "adonet";

    /// <summary>SQLite has one writer at a time; more calls in flight than this only wait inside it.</summary>
    private const int SqliteStorageCalls = 16;

    /// <summary>
    /// Grain storage calls in flight at most: the setting, else the connection pool's size, so that the pool never has
    /// more callers than connections and a burst waits here (bounded) instead of timing out in the driver.
    /// </summary>
    private static void AddBoundedStorage(ISiloBuilder silo, PersistenceSettings settings, int poolSize)
    {
        var limit = settings.MaxConcurrentStorageCalls > 0 ? settings.MaxConcurrentStorageCalls : poolSize;
        silo.Services.AddKeyedSingleton<IGrainStorage>(
            StorageNames.Default,
            (sp, _) => new BoundedGrainStorage(
                sp.GetRequiredKeyedService<IGrainStorage>(AdoNetStorage),
                limit,
                settings.StorageWaitTimeout,
                sp.GetRequiredService<TimeProvider>()));
    }

    /// <summary>Applies the schema when configured to (before the silo starts: clustering needs its tables).</summary>
    public static async Task ApplyOrchestratorSchemaAsync(this IServiceProvider services, OrchestratorSettings settings, CancellationToken cancellationToken = default)
    {
        if (!settings.Persistence.ApplySchema)
        {
            return;
        }

        var source = services.GetRequiredService<OrchestratorDataSource>();
        await SchemaInstaller.ApplyAsync(source.DataSource, source.Mode == PersistenceMode.Cluster ? "postgresql" : "sqlite", cancellationToken);
    }

    /// <summary>Server-side prepared statements kept per connection when the connection string does not say.</summary>
    internal const int DefaultMaxAutoPrepare = 32;

    /// <summary>
    /// The connection string with Npgsql's automatic preparation on (<c>Max Auto Prepare</c>), unless it sets that
    /// itself (0 turns it off). Grain storage runs the same three statements thousands of times; prepared once per
    /// connection, PostgreSQL no longer parses and plans each write (measured: see README, Fleet scale, CPU per
    /// backup). Results and durability are the same: only how the statement reaches the server changes.
    /// </summary>
    internal static string WithStatementCache(string connectionString)
    {
        var given = new DbConnectionStringBuilder { ConnectionString = connectionString };
        foreach (string key in given.Keys)
        {
            if (key.Replace(" ", "", StringComparison.Ordinal).Equals("maxautoprepare", StringComparison.OrdinalIgnoreCase))
            {
                return connectionString;
            }
        }

        return new NpgsqlConnectionStringBuilder(connectionString) { MaxAutoPrepare = DefaultMaxAutoPrepare }.ConnectionString;
    }

    private static DbDataSource CreateDataSource(PersistenceSettings settings)
    {
        if (settings.Mode == PersistenceMode.Cluster)
        {
            return NpgsqlDataSource.Create(WithStatementCache(settings.PostgresConnectionString!));
        }

        var path = Path.GetFullPath(settings.SqlitePath);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var builder = new SqliteConnectionStringBuilder { DataSource = path, Pooling = true };
        return new SqliteDataSource(builder.ConnectionString);
    }
}

/// <summary>The database the silo stores into, shared by Orleans and the schema installer.</summary>
internal sealed record OrchestratorDataSource(DbDataSource DataSource, PersistenceMode Mode);
