using System.Data.Common;
using Microsoft.Data.Sqlite;
using Npgsql;
using Orchestrator.Grains;
using Orchestrator.Grains.Storage;
using Orchestrator.Silo.Configuration;

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
            var cs = settings.Persistence.PostgresConnectionString!;
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
            silo.AddAdoNetGrainStorage(StorageNames.Default, o =>
            {
                o.Invariant = PostgresInvariant;
                o.DataSource = dataSource;
                o.GrainStorageSerializer = serializer;
            });
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
            silo.AddAdoNetGrainStorage(StorageNames.Default, o =>
            {
                o.Invariant = SqliteInvariant;
                o.DataSource = dataSource;
                o.GrainStorageSerializer = serializer;
            });
        }

        silo.Configure<Orleans.Configuration.ClusterOptions>(o =>
        {
            o.ClusterId = settings.Cluster.ClusterId;
            o.ServiceId = settings.Cluster.ServiceId;
        });
        return silo;
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

    private static DbDataSource CreateDataSource(PersistenceSettings settings)
    {
        if (settings.Mode == PersistenceMode.Cluster)
        {
            return NpgsqlDataSource.Create(settings.PostgresConnectionString!);
        }

        var path = Path.GetFullPath(settings.SqlitePath);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var builder = new SqliteConnectionStringBuilder { DataSource = path, Pooling = true };
        return new SqliteDataSource(builder.ConnectionString);
    }
}

/// <summary>The database the silo stores into, shared by Orleans and the schema installer.</summary>
internal sealed record OrchestratorDataSource(DbDataSource DataSource, PersistenceMode Mode);
