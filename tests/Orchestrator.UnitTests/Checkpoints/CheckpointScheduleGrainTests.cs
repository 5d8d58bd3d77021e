using System.Globalization;
using Orchestrator.Grains.Checkpoints;
using Orchestrator.Hypervisor;
using static Orchestrator.UnitTests.Checkpoints.CheckpointClusterFixture;

namespace Orchestrator.UnitTests.Checkpoints;

/// <summary>
/// Schedules in the VM grain on the fake-clock host: the due time persisted, runs when the clock passes it, retention
/// after each run, catch-up once after the grain was away, removal. The grain timer looks every 50 ms (real time).
/// </summary>
[Collection(CheckpointClusterCollection.Name)]
public sealed class CheckpointScheduleGrainTests(CheckpointClusterFixture fixture)
{
    private static readonly TimeSpan Quiet = TimeSpan.FromMilliseconds(400);

    [Fact]
    public async Task SetSchedule_Valid_PersistsTheNextDueTimeInTheScheduleTimeZone()
    {
        var vm = fixture.Vm(FakeHost, "sch-set");
        var now = fixture.Clock.GetUtcNow();

        var view = await vm.SetCheckpointScheduleAsync(new CheckpointSchedule("30 4 * * *", "Europe/Berlin", TimeSpan.Zero, new RetentionPolicy(KeepLast: 3, Daily: 7)));

        var berlin = TimeZoneInfo.FindSystemTimeZoneById("Europe/Berlin");
        var local = TimeZoneInfo.ConvertTime(now, berlin);
        var expectedLocal = new DateTime(local.Year, local.Month, local.Day, 4, 30, 0, DateTimeKind.Unspecified);
        if (expectedLocal <= local.DateTime)
        {
            expectedLocal = expectedLocal.AddDays(1);
        }

        var expected = new DateTimeOffset(expectedLocal, berlin.GetUtcOffset(expectedLocal));
        Assert.Equal(expected, view.NextDueAt);
        Assert.Equal("Europe/Berlin", view.Schedule.TimeZone);
        Assert.Equal(new RetentionPolicy(KeepLast: 3, Daily: 7), view.Schedule.Retention);
        Assert.Null(view.LastRun);
        var read = await vm.GetCheckpointScheduleAsync();
        Assert.Equal(view.Schedule, read!.Schedule);
        Assert.Equal(view.NextDueAt, read.NextDueAt);
        Assert.True(await vm.DeleteCheckpointScheduleAsync());
    }

    [Theory]
    [InlineData("61 * * * *", "UTC", 3, "schedule.cron")]
    [InlineData("not a cron", "UTC", 3, "schedule.cron")]
    [InlineData("0 * * * *", "Nowhere/Atlantis", 3, "schedule.time_zone")]
    [InlineData("0 * * * *", "UTC", -1, "retention.keep_last")]
    public async Task SetSchedule_BadInput_InvalidArgumentNamingTheFieldAndNothingStored(string cron, string zone, int keepLast, string field)
    {
        var vm = fixture.Vm(FakeHost, "sch-set");

        var e = await Assert.ThrowsAsync<OrchestratorException>(() => vm.SetCheckpointScheduleAsync(new CheckpointSchedule(cron, zone, TimeSpan.Zero, new RetentionPolicy(KeepLast: keepLast, Daily: 1))));

        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
        Assert.Equal(field, e.Field);
        Assert.Null(await vm.GetCheckpointScheduleAsync());
    }

    [Fact]
    public async Task SetSchedule_RawDiskVm_RefusedUpFront()
    {
        var e = await Assert.ThrowsAsync<OrchestratorException>(() => fixture.Vm(FakeHost, "sch-raw").SetCheckpointScheduleAsync(Hourly(keepLast: 2)));

        Assert.Equal(ErrorCode.FailedPrecondition, e.Code);
        Assert.Equal("RAW_DISK", e.Reason);
    }

    [Fact]
    public async Task Schedule_DueTimesPass_TakesOneCheckpointEachAndPrunesOnlyScheduledOnes()
    {
        var vm = fixture.Vm(FakeHost, "sch-run");
        await vm.CreateCheckpointAsync("manual-keep");
        var view = await vm.SetCheckpointScheduleAsync(Hourly(keepLast: 2));

        var taken = new List<string>();
        for (var run = 1; run <= 4; run++)
        {
            fixture.Clock.SetUtcNow(view.NextDueAt);
            view = await EventuallyAsync(() => Schedule(vm), v => v.Runs == run, $"scheduled run {run}");
            Assert.Null(view.LastRun!.Error);
            Assert.Equal(0, view.LastRun.SkippedSlots);
            taken.Add(view.LastRun.Checkpoint!);
        }

        Assert.All(taken, name => Assert.StartsWith(CheckpointNames.SchedulePrefix, name, StringComparison.Ordinal));
        Assert.Equal(4, taken.Distinct().Count());
        Assert.Equal(taken.TakeLast(2), view.ScheduledCheckpoints);
        Assert.Equal([taken[1]], view.LastRun!.Pruned);
        var inHypervisor = (await fixture.Fake.ListInternalSnapshotsAsync("sch-run")).Select(s => s.Name).Order(StringComparer.Ordinal);
        Assert.Equal(new[] { "manual-keep", taken[2], taken[3] }.Order(StringComparer.Ordinal), inHypervisor);
        var listed = await vm.ListCheckpointsAsync();
        Assert.Equal([CheckpointOrigin.Manual, CheckpointOrigin.Schedule, CheckpointOrigin.Schedule], listed.Select(c => c.Origin));
        Assert.True(await vm.DeleteCheckpointScheduleAsync());
    }

    [Fact]
    public async Task Schedule_MissedWhileTheGrainWasAway_CatchesUpOnceOnActivation()
    {
        var vm = fixture.Vm(FakeHost, "sch-catch");
        var view = await vm.SetCheckpointScheduleAsync(Hourly(keepLast: 10));
        var firstDue = view.NextDueAt;

        // The grain goes away (as with its silo down); 4.5 hours pass: five due times are missed.
        await fixture.Cluster.DeactivateAsync(vm);
        await fixture.Cluster.WaitForDeactivationAsync(vm);
        var downUntil = firstDue + TimeSpan.FromHours(4) + TimeSpan.FromMinutes(30);
        fixture.Clock.SetUtcNow(downUntil);

        view = await EventuallyAsync(() => Schedule(vm), v => v.Runs >= 1, "the catch-up run");
        await Task.Delay(Quiet);
        view = (await vm.GetCheckpointScheduleAsync())!;

        Assert.Equal(1, view.Runs);
        Assert.Equal(firstDue, view.LastRun!.DueAt);
        Assert.Equal(4, view.LastRun.SkippedSlots);
        Assert.Equal(downUntil, view.LastRun.At);
        Assert.Equal(firstDue + TimeSpan.FromHours(5), view.NextDueAt);
        var taken = Assert.Single(await fixture.Fake.ListInternalSnapshotsAsync("sch-catch"));
        Assert.Equal(CheckpointNames.ForTime(CheckpointNames.SchedulePrefix, downUntil), taken.Name);
        Assert.True(await vm.DeleteCheckpointScheduleAsync());
    }

    [Fact]
    public async Task DeleteSchedule_NoMoreRuns_CheckpointsStay()
    {
        var vm = fixture.Vm(FakeHost, "sch-del");
        var view = await vm.SetCheckpointScheduleAsync(Hourly(keepLast: 1));
        fixture.Clock.SetUtcNow(view.NextDueAt);
        view = await EventuallyAsync(() => Schedule(vm), v => v.Runs == 1, "the first run");
        var disk = Assert.Single(await fixture.Fake.ListInternalSnapshotsAsync("sch-del"));
        Assert.False(disk.HasMemory);

        Assert.True(await vm.DeleteCheckpointScheduleAsync());
        fixture.Clock.Advance(TimeSpan.FromHours(3));
        await Task.Delay(Quiet);

        Assert.Null(await vm.GetCheckpointScheduleAsync());
        Assert.Equal([view.LastRun!.Checkpoint], (await fixture.Fake.ListInternalSnapshotsAsync("sch-del")).Select(s => s.Name));
        Assert.False(await vm.DeleteCheckpointScheduleAsync());
    }

    [Fact]
    public async Task Schedule_RunRefused_IsRecordedAndTheScheduleMovesOn()
    {
        var vm = fixture.Vm(FakeHost, "sch-ovl");
        var view = await vm.SetCheckpointScheduleAsync(Hourly(keepLast: 2));
        await fixture.Fake.CreateExternalSnapshotAsync("sch-ovl", [new OverlaySpec("vda", "/var/lib/libvirt/images/sch-ovl-vda.orch-r7.qcow2")]);
        var due = view.NextDueAt;

        fixture.Clock.SetUtcNow(due);
        view = await EventuallyAsync(() => Schedule(vm), v => v.Runs == 1, "the refused run");

        Assert.Null(view.LastRun!.Checkpoint);
        Assert.Contains("active backup overlay", view.LastRun.Error, StringComparison.Ordinal);
        Assert.Equal(due + TimeSpan.FromHours(1), view.NextDueAt);
        Assert.Empty(await fixture.Fake.ListInternalSnapshotsAsync("sch-ovl"));
        Assert.True(await vm.DeleteCheckpointScheduleAsync());
    }

    [Fact]
    public async Task SetSchedule_WithJitter_DueIsTheOccurrencePlusThisVmsOffset()
    {
        var vm = fixture.Vm(FakeHost, "sch-set");
        var jitter = TimeSpan.FromMinutes(20);
        var now = fixture.Clock.GetUtcNow();
        var offset = CheckpointSchedulePlanner.JitterOffset($"{FakeHost}/sch-set", jitter);

        var view = await vm.SetCheckpointScheduleAsync(Hourly(keepLast: 2) with { Jitter = jitter });

        var occurrence = view.NextDueAt - offset;
        Assert.Equal(0, occurrence.Minute + occurrence.Second + occurrence.Millisecond);
        Assert.True(view.NextDueAt > now && view.NextDueAt <= now + TimeSpan.FromHours(1) + jitter, view.NextDueAt.ToString("O", CultureInfo.InvariantCulture));
        Assert.True(await vm.DeleteCheckpointScheduleAsync());
    }

    private static CheckpointSchedule Hourly(int keepLast) => new("0 * * * *", "UTC", TimeSpan.Zero, new RetentionPolicy(KeepLast: keepLast));

    private static async Task<CheckpointScheduleView> Schedule(IVirtualMachineGrain vm) =>
        await vm.GetCheckpointScheduleAsync() ?? throw new InvalidOperationException("no schedule");
}
