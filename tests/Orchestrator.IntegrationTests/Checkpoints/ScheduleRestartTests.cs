using Grpc.Net.Client;
using Orchestrator.Api.V1;
using Orchestrator.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace Orchestrator.IntegrationTests.Checkpoints;

/// <summary>
/// A schedule survives its silo process being killed (SIGKILL) and started again, in both persistence modes: the
/// due time is read back from the database, the due times missed while the silo was down are caught up by one run
/// (not one per missed slot), and the next checkpoint after that is taken on time.
/// </summary>
internal static class ScheduleRestart
{
    /// <summary>Every 10 seconds: short enough for a test, long enough to tell a catch-up from the next regular run.</summary>
    public const string Cron = "*/10 * * * * *";

    private static readonly TimeSpan Down = TimeSpan.FromSeconds(25);

    /// <summary>Runs the whole story against a started silo; <paramref name="checkpointNames"/> lists what the hypervisor holds.</summary>
    public static async Task RunAsync(SiloProcess silo, string key, Func<CheckpointService.CheckpointServiceClient, Task<IReadOnlyList<string>>> checkpointNames, ITestOutputHelper output)
    {
        var client = Client(silo);
        var set = (await client.SetCheckpointScheduleAsync(new SetCheckpointScheduleRequest
        {
            Key = key,
            Schedule = new Api.V1.CheckpointSchedule { Cron = Cron, TimeZone = "Europe/Berlin" },
            Retention = new Api.V1.RetentionPolicy { KeepLast = 20 },
        })).Schedule;
        output.WriteLine($"schedule set, next due {set.NextDueAt}");

        var beforeKill = await WaitForRunsAsync(client, key, 1, TimeSpan.FromMinutes(2));
        Assert.True(beforeKill.LastRun.Error.Length == 0, beforeKill.LastRun.Error);
        var namesBeforeKill = await checkpointNames(client);
        await silo.KillAsync();
        var killedAt = DateTimeOffset.UtcNow;
        output.WriteLine($"killed after {beforeKill.Runs} run(s) (last {beforeKill.LastRun.Checkpoint}); next due was {beforeKill.NextDueAt}");

        // At least two due times pass while the silo is down.
        await Task.Delay(Down);
        silo.Start();
        await silo.WaitReadyAsync(TimeSpan.FromMinutes(3));
        client = Client(silo);

        // One catch-up run for the missed due times, then the next regular checkpoint on its due time.
        var status = await WaitForRunsAsync(client, key, beforeKill.Runs + 2, TimeSpan.FromMinutes(3));
        var sinceKill = status.RecentRuns.Where(r => r.At.ToDateTimeOffset() > killedAt).Reverse().ToList();
        foreach (var run in sinceKill)
        {
            output.WriteLine($"run at {run.At} for {run.DueAt}: {run.Checkpoint}, skipped {run.SkippedSlots} {run.Error}");
        }

        Assert.Equal(status.Runs - beforeKill.Runs, sinceKill.Count);
        Assert.All(sinceKill, r => Assert.True(r.Error.Length == 0 && r.Checkpoint.Length > 0, r.ToString()));
        var catchUp = sinceKill[0];
        Assert.Equal(beforeKill.NextDueAt, catchUp.DueAt);
        Assert.True(catchUp.SkippedSlots >= 1, $"due times passed while down, yet skipped_slots is {catchUp.SkippedSlots}");

        // Only that one run served a past due time: no run per missed slot. The others ran on time, none skipped.
        Assert.All(sinceKill.Skip(1), r =>
        {
            Assert.Equal(0, r.SkippedSlots);
            Assert.True(r.At.ToDateTimeOffset() - r.DueAt.ToDateTimeOffset() < TimeSpan.FromSeconds(5), $"run for {r.DueAt} came late, at {r.At}");
        });
        Assert.True(sinceKill[1].DueAt.ToDateTimeOffset() > catchUp.At.ToDateTimeOffset(), "the next run serves a due time after the catch-up");

        // The hypervisor holds exactly the checkpoints of those runs (plus any run that came since we looked).
        var newNames = (await checkpointNames(client)).Except(namesBeforeKill).ToList();
        var latest = (await client.GetCheckpointScheduleAsync(new GetCheckpointScheduleRequest { Key = key })).Schedule;
        var runNames = sinceKill.Select(r => r.Checkpoint).ToList();
        Assert.Subset(newNames.ToHashSet(), runNames.ToHashSet());
        Assert.InRange(newNames.Count - runNames.Count, 0, latest.Runs - status.Runs);

        await client.DeleteCheckpointScheduleAsync(new DeleteCheckpointScheduleRequest { Key = key });
    }

    public static CheckpointService.CheckpointServiceClient Client(SiloProcess silo) => new(GrpcChannel.ForAddress(silo.GrpcEndpoint));

    private static async Task<CheckpointScheduleStatus> WaitForRunsAsync(CheckpointService.CheckpointServiceClient client, string key, int runs, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        CheckpointScheduleStatus? last = null;
        while (DateTime.UtcNow < deadline)
        {
            try
            {
                last = (await client.GetCheckpointScheduleAsync(new GetCheckpointScheduleRequest { Key = key }, deadline: DateTime.UtcNow.AddSeconds(30))).Schedule;
                if (last.Runs >= runs)
                {
                    return last;
                }
            }
            catch (Grpc.Core.RpcException e) when (e.StatusCode is Grpc.Core.StatusCode.Unavailable or Grpc.Core.StatusCode.DeadlineExceeded or Grpc.Core.StatusCode.Internal)
            {
                // Right after a restart the host's grains may not be placeable yet.
            }

            await Task.Delay(200);
        }

        throw new TimeoutException($"schedule of {key} did not reach {runs} runs in {timeout}; last: {last}");
    }
}

public sealed class EmbeddedScheduleRestartTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Schedule_SiloKilledAndRestarted_CatchesUpOnceAndKeepsRunning()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"orchestrator-ckse-{Guid.NewGuid():N}");
        try
        {
            await using var silo = new SiloProcess("demo-01", dir);
            silo.Start();
            await silo.WaitReadyAsync();
            await GrpcClients.Fleet(silo.GrpcEndpoint).WaitForVmAsync("demo-01/web-2");

            // The simulated host starts empty again with its process: list what it holds now.
            await ScheduleRestart.RunAsync(
                silo,
                "demo-01/web-2",
                async client => [.. (await client.ListCheckpointsAsync(new ListCheckpointsRequest { Key = "demo-01/web-2" })).Checkpoints.Select(c => c.Name)],
                output);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}

/// <summary>Cluster mode: PostgreSQL for membership, state and reminders, and a real lab host, so checkpoints persist in the qcow2.</summary>
[Collection(PostgresCollection.Name)]
public sealed class PostgresScheduleRestartTests(PostgresFixture postgres, ITestOutputHelper output)
{
    private const string Host = "cks";
    private const string Vm = "cks-run";

    [Fact]
    public async Task Schedule_SiloKilledAndRestarted_CatchesUpOnceAndTheNextCheckpointIsTaken()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"orchestrator-cksp-{Guid.NewGuid():N}");
        await using var lab = new LabHost(Host);
        try
        {
            await lab.StartAsync();
            await lab.CreateVmAsync(Vm, "qcow2:64M", intervalMs: 200);
            await lab.WaitForSeqAsync(Vm, 2);
            await using var silo = new SiloProcess(Host, dir, new Dictionary<string, string>
            {
                ["Orchestrator__Host__Uri"] = lab.Uri,
                ["Orchestrator__Host__SeedDemo"] = "false",
                ["Orchestrator__Persistence__Mode"] = "Cluster",
                ["Orchestrator__Persistence__PostgresConnectionString"] = postgres.ConnectionString,
                ["Orchestrator__Cluster__ClusterId"] = $"cks-{Guid.NewGuid():N}"[..16],

                // Its own service id: grain state (the fleet's host registry too) is not shared with other tests of this database.
                ["Orchestrator__Cluster__ServiceId"] = $"cks-{Guid.NewGuid():N}"[..16],
            });
            silo.Start();
            await silo.WaitReadyAsync(TimeSpan.FromMinutes(3));
            await GrpcClients.Fleet(silo.GrpcEndpoint).WaitForVmAsync($"{Host}/{Vm}", TimeSpan.FromMinutes(2));

            // The checkpoints live in the guest's qcow2: ask qemu-img, not the orchestrator.
            var disk = lab.DiskPath(Vm, "vda", "qcow2");
            await ScheduleRestart.RunAsync(silo, $"{Host}/{Vm}", async _ => await lab.QemuImgSnapshotsAsync(disk), output);
        }
        finally
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }
}
