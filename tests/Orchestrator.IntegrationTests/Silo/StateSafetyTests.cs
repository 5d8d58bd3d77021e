using System.Diagnostics;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.Data.Sqlite;
using Orchestrator.Api.V1;
using Orchestrator.IntegrationTests.Infrastructure;

namespace Orchestrator.IntegrationTests.Silo;

/// <summary>
/// One writer per grain state, on the real storages: a silo process (simulated host) backs a VM up again and again
/// while inventory syncs, schedule writes and reads hammer the same VM grain. Any two overlapping writes of one state
/// carry the same ETag: the storage refuses the second ("Version conflict", InconsistentStateException) and Orleans
/// deactivates the grain. Both show in the silo's log (the VM grain logs every deactivation that is not routine).
/// </summary>
internal static class StateStress
{
    public const string Vm = "demo-01/web-2";

    public static Dictionary<string, string> Settings(string backupRoot) => new()
    {
        ["Orchestrator__Backup__Roots__0"] = backupRoot,
        ["Orchestrator__Backup__DefaultTarget"] = backupRoot,
        ["Orchestrator__InventorySyncInterval"] = "00:00:01",
    };

    public static async Task RunAsync(SiloProcess silo, TimeSpan duration)
    {
        var channel = GrpcChannel.ForAddress(silo.GrpcEndpoint);
        var backups = new BackupService.BackupServiceClient(channel);
        var checkpoints = new CheckpointService.CheckpointServiceClient(channel);
        var fleet = new FleetService.FleetServiceClient(channel);
        await fleet.WaitForVmAsync(Vm);

        var failures = new List<string>();
        using var stop = new CancellationTokenSource(duration);

        async Task HammerAsync(Func<Task> call)
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    await call();
                }
                catch (RpcException e)
                {
                    lock (failures)
                    {
                        failures.Add($"{e.StatusCode}: {e.Status.Detail}");
                    }
                }
            }
        }

        var schedule = new CheckpointSchedule { Cron = "@hourly" };
        var hammers = new[]
        {
            // Writes of the same VM state from calls, interleaving with the backup task's writes.
            HammerAsync(async () =>
            {
                await checkpoints.SetCheckpointScheduleAsync(new SetCheckpointScheduleRequest { Key = Vm, Schedule = schedule, Retention = new RetentionPolicy { KeepLast = 3 } });
                await checkpoints.DeleteCheckpointScheduleAsync(new DeleteCheckpointScheduleRequest { Key = Vm });
            }),
            HammerAsync(async () => await fleet.GetVmAsync(new GetVmRequest { Key = Vm })),
            HammerAsync(async () => await checkpoints.ListCheckpointsAsync(new ListCheckpointsRequest { Key = Vm })),
            HammerAsync(async () => await backups.ListBackupsAsync(new ListBackupsRequest { Vm = Vm })),
        };

        var runs = 0;
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < duration)
        {
            string key;
            try
            {
                key = (await backups.StartBackupAsync(new StartBackupRequest { Vm = Vm })).Run.Key;
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.FailedPrecondition && e.Status.Detail.Contains("expected", StringComparison.Ordinal))
            {
                // The VM's record still shows the chain as the last run's overlay left it: wait for the next sync.
                await Task.Delay(200);
                continue;
            }

            BackupRun run;
            do
            {
                run = (await backups.GetBackupAsync(new GetBackupRequest { Key = key })).Run;
            }
            while (run.Step is not (BackupStep.Completed or BackupStep.Failed));

            Assert.True(run.Step == BackupStep.Completed, $"backup {key} ended {run.Step}: {run.Error}\n{silo.Log}");
            runs++;
        }

        await stop.CancelAsync();
        await Task.WhenAll(hammers);

        Assert.True(runs >= 3, $"only {runs} backups ran");
        Assert.True(failures.Count == 0, $"{failures.Count} calls failed, e.g. {failures.FirstOrDefault()}\n{silo.Log}");
        var log = silo.Log;
        Assert.DoesNotContain("Version conflict", log, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("InconsistentState", log, StringComparison.Ordinal);
        Assert.DoesNotContain("deactivating for", log, StringComparison.Ordinal);
    }
}

public sealed class SqliteStateSafetyTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"orchestrator-state-{Guid.NewGuid():N}");

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync()
    {
        if (Directory.Exists(_dir))
        {
            Directory.Delete(_dir, recursive: true);
        }

        return Task.CompletedTask;
    }

    [Fact]
    public async Task BackupWhileSyncsAndCallsHammerTheVm_Sqlite_NoWriteConflictNoDeactivation()
    {
        await using var silo = new SiloProcess("demo-01", Path.Combine(_dir, "silo"), StateStress.Settings(Path.Combine(_dir, "backups")));
        silo.Start();
        await silo.WaitReadyAsync();

        await StateStress.RunAsync(silo, TimeSpan.FromSeconds(15));
    }

    [Fact]
    public async Task StartBackup_SiloKilledDuringPreflight_NothingLeftLockedOnRestartAndABackupCompletes()
    {
        var settings = StateStress.Settings(Path.Combine(_dir, "backups"));
        settings["Orchestrator__Backup__KillAt"] = "Preflight";
        await using var silo = new SiloProcess("demo-01", Path.Combine(_dir, "silo"), settings);
        silo.Start();
        await silo.WaitReadyAsync();
        await GrpcClients.Fleet(silo.GrpcEndpoint).WaitForVmAsync(StateStress.Vm);

        // The process dies inside the call, during preflight: the lock is held in memory only, persisted with the run.
        await Assert.ThrowsAsync<RpcException>(async () =>
            await new BackupService.BackupServiceClient(GrpcChannel.ForAddress(silo.GrpcEndpoint)).StartBackupAsync(new StartBackupRequest { Vm = StateStress.Vm }));
        Assert.Equal(137, await silo.WaitForExitAsync(TimeSpan.FromSeconds(30)));

        silo.Set("Orchestrator__Backup__KillAt", null);
        silo.Start();
        await silo.WaitReadyAsync();
        await GrpcClients.Fleet(silo.GrpcEndpoint).WaitForVmAsync(StateStress.Vm);
        var backups = new BackupService.BackupServiceClient(GrpcChannel.ForAddress(silo.GrpcEndpoint));
        var key = (await backups.StartBackupAsync(new StartBackupRequest { Vm = StateStress.Vm })).Run.Key;
        BackupRun run;
        do
        {
            await Task.Delay(100);
            run = (await backups.GetBackupAsync(new GetBackupRequest { Key = key })).Run;
        }
        while (run.Step is not (BackupStep.Completed or BackupStep.Failed));

        Assert.True(run.Step == BackupStep.Completed, $"{run.Step}: {run.Error}\n{silo.Log}");

        // Nothing was persisted before the kill, so no orphaned lock had to be released.
        Assert.DoesNotContain("its run was never persisted", silo.Log, StringComparison.Ordinal);
    }

    [Fact]
    public async Task SyncInventory_OneVmStateRowDamaged_ThatVmFailsClearlyAndTheOthersSync()
    {
        const string Damaged = "demo-01/web-2";
        var workDir = Path.Combine(_dir, "silo");
        await using var silo = new SiloProcess("demo-01", workDir);
        silo.Start();
        await silo.WaitReadyAsync();
        var fleet = GrpcClients.Fleet(silo.GrpcEndpoint);
        await fleet.WaitForVmAsync(Damaged);
        var before = await fleet.WaitForVmAsync("demo-01/db-1");
        await silo.KillAsync();

        var damagedRows = 0;
        await using (var db = new SqliteConnection($"Data Source={Path.Combine(workDir, "orchestrator.db")};Pooling=False"))
        {
            await db.OpenAsync();
            var update = db.CreateCommand();
            // 0xc1 is never used in MessagePack: the row cannot be read.
            update.CommandText = "UPDATE OrleansStorage SET PayloadBinary = X'c1c1c1c1' WHERE GrainIdExtensionString = $key AND GrainTypeString = 'vm'";
            update.Parameters.AddWithValue("$key", Damaged);
            damagedRows = await update.ExecuteNonQueryAsync();
            if (damagedRows == 0)
            {
                var rows = db.CreateCommand();
                rows.CommandText = "SELECT GrainTypeString, GrainIdExtensionString FROM OrleansStorage";
                await using var reader = await rows.ExecuteReaderAsync();
                var seen = new List<string>();
                while (await reader.ReadAsync())
                {
                    seen.Add($"{reader.GetString(0)} | {(reader.IsDBNull(1) ? "" : reader.GetString(1))}");
                }

                Assert.Fail("no row of the VM grain found; rows: " + string.Join("; ", seen));
            }
        }

        Assert.Equal(1, damagedRows);
        silo.Start();
        await silo.WaitReadyAsync();

        // Every other VM is still synced (a new sync time), the damaged one fails with a clear error.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        Vm after;
        do
        {
            await Task.Delay(500);
            after = await fleet.WaitForVmAsync("demo-01/db-1");
            Assert.True(DateTime.UtcNow < deadline, "db-1 was not synced again after the restart\n" + silo.Log);
        }
        while (after.LastSync.ToDateTimeOffset() <= before.LastSync.ToDateTimeOffset());

        foreach (var other in new[] { "demo-01/web-1", "demo-01/legacy-1", "demo-01/build-1" })
        {
            await fleet.WaitForVmAsync(other);
        }

        var error = await Assert.ThrowsAsync<RpcException>(async () => await fleet.GetVmAsync(new GetVmRequest { Key = Damaged }));
        Assert.Equal(StatusCode.Internal, error.StatusCode);
        Assert.Contains("cannot be read", error.Status.Detail, StringComparison.Ordinal);
        Assert.True(error.Status.Detail.Length < 600, error.Status.Detail);
        Assert.Contains("skipped by the inventory sync", silo.Log, StringComparison.Ordinal);
        var hosts = (await fleet.ListHostsAsync(new ListHostsRequest())).Hosts;
        Assert.True(string.IsNullOrEmpty(hosts.Single().LastSyncError), hosts.Single().LastSyncError);
    }
}

[Collection(PostgresCollection.Name)]
public sealed class PostgresStateSafetyTests(PostgresFixture postgres) : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"orchestrator-state-pg-{Guid.NewGuid():N}");

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync()
    {
        if (Directory.Exists(_dir))
        {
            Directory.Delete(_dir, recursive: true);
        }

        return Task.CompletedTask;
    }

    [Fact]
    public async Task BackupWhileSyncsAndCallsHammerTheVm_Postgres_NoWriteConflictNoDeactivation()
    {
        var settings = StateStress.Settings(Path.Combine(_dir, "backups"));
        settings["Orchestrator__Persistence__Mode"] = "Cluster";
        settings["Orchestrator__Persistence__PostgresConnectionString"] = postgres.ConnectionString;
        settings["Orchestrator__Cluster__ClusterId"] = $"state-{Guid.NewGuid():N}"[..16];
        settings["Orchestrator__Cluster__ServiceId"] = $"state-{Guid.NewGuid():N}"[..16]; // its own grain state (the fleet registry too)
        await using var silo = new SiloProcess("demo-01", Path.Combine(_dir, "silo"), settings);
        silo.Start();
        await silo.WaitReadyAsync();

        await StateStress.RunAsync(silo, TimeSpan.FromSeconds(15));
    }
}
