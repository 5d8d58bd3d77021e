using Grpc.Core;
using Orchestrator.Api.V1;
using Orchestrator.IntegrationTests.Infrastructure;

namespace Orchestrator.IntegrationTests.Backup;

/// <summary>
/// A real lab host and a real PostgreSQL for the live-backup tests; each test makes its own guest and silo
/// process (cluster mode: membership and grain state in PostgreSQL, one cluster id per test).
/// </summary>
public class BackupLabFixture : IAsyncLifetime
{
    public BackupLabFixture()
        : this("ib")
    {
    }

    protected BackupLabFixture(string labHost) => Lab = new(labHost);

    public LabHost Lab { get; }

    public PostgresFixture Postgres { get; } = new();

    public string BackupRoot => Path.Combine(Lab.HostDir, "backups");

    public async Task InitializeAsync()
    {
        await Postgres.InitializeAsync();
        await Lab.InitializeAsync();
    }

    public async Task DisposeAsync()
    {
        await Lab.DisposeAsync();
        await Postgres.DisposeAsync();
    }

    /// <summary>A silo process serving the lab host, backing up under <see cref="BackupRoot"/>.</summary>
    public SiloProcess NewSilo(string workDir, string clusterId, IDictionary<string, string>? extra = null)
    {
        Directory.CreateDirectory(BackupRoot);
        var settings = new Dictionary<string, string>
        {
            ["Orchestrator__Persistence__Mode"] = "Cluster",
            ["Orchestrator__Persistence__PostgresConnectionString"] = Postgres.ConnectionString,
            ["Orchestrator__Cluster__ClusterId"] = clusterId,
            ["Orchestrator__Host__Uri"] = Lab.Uri,
            ["Orchestrator__Host__SeedDemo"] = "false",
            ["Orchestrator__Backup__Roots__0"] = BackupRoot,
            ["Orchestrator__Backup__DefaultTarget"] = BackupRoot,
            ["Orchestrator__Backup__ReconcileInterval"] = "00:00:05",
        };
        foreach (var (k, v) in extra ?? new Dictionary<string, string>())
        {
            settings[k] = v;
        }

        return new SiloProcess(Lab.Name, workDir, settings);
    }

    public static async Task<BackupRun> WaitForRunAsync(BackupService.BackupServiceClient client, string key, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromMinutes(3));
        while (true)
        {
            try
            {
                var run = (await client.GetBackupAsync(new GetBackupRequest { Key = key })).Run;
                if (run.Step is BackupStep.Completed or BackupStep.Failed)
                {
                    return run;
                }
            }
            catch (RpcException e) when (e.StatusCode is StatusCode.Unavailable or StatusCode.NotFound)
            {
            }

            Assert.True(DateTime.UtcNow < deadline, $"run {key} did not finish in time");
            await Task.Delay(300);
        }
    }
}

[CollectionDefinition(Name)]
public sealed class BackupLabCollection : ICollectionFixture<BackupLabFixture>
{
    public const string Name = "backup lab";
}

/// <summary>
/// A second lab host and PostgreSQL of the same kind, for the backup tests of other methods (incremental, offline) and
/// test restores: its collection runs beside the first, so the two halves of the backup lab tests share the two cores.
/// </summary>
public sealed class SecondBackupLabFixture() : BackupLabFixture("ib2");

[CollectionDefinition(Name)]
public sealed class SecondBackupLabCollection : ICollectionFixture<SecondBackupLabFixture>
{
    public const string Name = "backup lab 2";
}

/// <summary>
/// A lab host of its own for the tests that hang, restart or break its libvirtd on purpose (<see cref="DaemonFaultLabTests"/>).
/// libvirtd 9.0 (Debian 12) can crash after being SIGSTOPped and continued: once in a CI run its main loop segfaulted
/// in <c>virEventGLibTimeoutRemoveIdle</c> (kernel log) as the silo's timed-out reconnects were served all at once.
/// On a host shared with other tests that crash failed every test after it ("host ib is not running"); here it can
/// fail only the fault tests, which are about that daemon.
/// </summary>
public sealed class DaemonFaultLabFixture() : BackupLabFixture("ibf");

[CollectionDefinition(Name)]
public sealed class DaemonFaultLabCollection : ICollectionFixture<DaemonFaultLabFixture>
{
    public const string Name = "backup lab daemon faults";
}
