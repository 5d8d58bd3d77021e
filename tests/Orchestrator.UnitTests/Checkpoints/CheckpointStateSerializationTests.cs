using Orchestrator.Grains.Storage;
using Orchestrator.Grains.VirtualMachines;

namespace Orchestrator.UnitTests.Checkpoints;

public sealed class CheckpointStateSerializationTests
{
    private readonly MessagePackGrainStorageSerializer _serializer = new();

    [Fact]
    public void RoundTrip_CheckpointsAndSchedule_KeepEveryField()
    {
        var due = new DateTimeOffset(2025, 3, 9, 7, 0, 0, TimeSpan.Zero);
        var state = new VirtualMachineState
        {
            Known = true,
            Checkpoints =
            [
                new CheckpointRecord
                {
                    Name = "auto-20250309-070000",
                    CreatedAt = due,
                    WithMemory = true,
                    Origin = CheckpointOrigin.Schedule,
                    Pause = TimeSpan.FromMilliseconds(231.5),
                    PauseSource = PauseSource.Events,
                    StateAtCheckpoint = VmPowerState.Running,
                    Duration = TimeSpan.FromMilliseconds(402),
                },
            ],
            CheckpointSchedule = new CheckpointScheduleState
            {
                Cron = "0 * * * *",
                TimeZone = "America/New_York",
                Jitter = TimeSpan.FromMinutes(5),
                KeepLast = 3,
                Hourly = 24,
                Daily = 7,
                Weekly = 4,
                Monthly = 12,
                NextDueAt = due.AddHours(1),
                UpdatedAt = due.AddDays(-1),
                Runs = 17,
                LastRun = new ScheduledRunRecord { At = due, DueAt = due, Checkpoint = "auto-20250309-070000", SkippedSlots = 2, Pruned = ["auto-20250309-030000"] },
                RecentRuns =
                [
                    new ScheduledRunRecord { At = due, DueAt = due, Checkpoint = "auto-20250309-070000", SkippedSlots = 2 },
                    new ScheduledRunRecord { At = due.AddHours(-1), DueAt = due.AddHours(-1), Checkpoint = "auto-20250309-060000" },
                ],
            },
        };

        var back = _serializer.Deserialize<VirtualMachineState>(_serializer.Serialize(state));

        Assert.Equal(state.Checkpoints, back.Checkpoints);
        var schedule = back.CheckpointSchedule!;
        List<ScheduledRunRecord> runs = [];
        Assert.Equal(state.CheckpointSchedule with { LastRun = null, RecentRuns = runs }, schedule with { LastRun = null, RecentRuns = runs });
        Assert.Equal(2, schedule.RecentRuns.Count);
        Assert.Equal("auto-20250309-060000", schedule.RecentRuns[1].Checkpoint);
        List<string> same = [];
        Assert.Equal(state.CheckpointSchedule.LastRun with { Pruned = same }, schedule.LastRun! with { Pruned = same });
        Assert.Equal(["auto-20250309-030000"], schedule.LastRun.Pruned);
    }

    [Fact]
    public void Deserialize_StateWrittenBeforeCheckpoints_HasNoneAndNoSchedule()
    {
        // The stored shape before keys 20-21 existed: a MessagePack array of keys 0-10 only.
        var uuid = Guid.NewGuid();
        var current = MessagePack.MessagePackSerializer.Deserialize<object?[]>(_serializer.Serialize(new VirtualMachineState { Known = true, Uuid = uuid }).ToMemory());
        Assert.True(current.Length > 20, "keys 20+ are written today");
        var old = new BinaryData(MessagePack.MessagePackSerializer.Serialize(current.Take(11).ToArray()));

        var back = _serializer.Deserialize<VirtualMachineState>(old);

        Assert.True(back.Known);
        Assert.Equal(uuid, back.Uuid);
        Assert.Empty(back.Checkpoints);
        Assert.Null(back.CheckpointSchedule);
    }
}
