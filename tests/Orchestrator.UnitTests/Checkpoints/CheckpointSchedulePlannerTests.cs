using System.Globalization;
using Microsoft.Extensions.Time.Testing;
using Orchestrator.Grains.Checkpoints;

namespace Orchestrator.UnitTests.Checkpoints;

/// <summary>The pure schedule logic against a fake clock: validation, due times, time zones across DST, jitter, catch-up, retention.</summary>
public sealed class CheckpointSchedulePlannerTests
{
    private const string Vm = "kvm-01/web-1";
    private static readonly RetentionPolicy KeepTen = new(KeepLast: 10);

    private readonly FakeTimeProvider _clock = new(At("2025-03-01T10:17:30Z"));
    private readonly CheckpointSchedulePlanner _planner;

    public CheckpointSchedulePlannerTests()
    {
        _planner = new CheckpointSchedulePlanner(_clock);
    }

    [Theory]
    [InlineData("")]
    [InlineData("banana")]
    [InlineData("* * *")]
    [InlineData("61 * * * *")]
    [InlineData("0 25 * * *")]
    [InlineData("* * * * * * *")]
    public void Parse_MalformedCron_InvalidArgumentNamingScheduleCron(string cron)
    {
        var e = Assert.Throws<OrchestratorException>(() => _planner.Parse(Schedule(cron)));

        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
        Assert.Equal("schedule.cron", e.Field);
        Assert.StartsWith("schedule.cron: ", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_CronThatNeverFires_InvalidArgumentNamingScheduleCron()
    {
        var e = Assert.Throws<OrchestratorException>(() => _planner.Parse(Schedule("0 0 30 2 *")));

        Assert.Equal("schedule.cron", e.Field);
        Assert.Contains("never fires", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("Mars/Olympus_Mons")]
    [InlineData("Europe/Berlinn")]
    [InlineData("UTC+25")]
    public void Parse_UnknownTimeZone_InvalidArgumentNamingTimeZone(string zone)
    {
        var e = Assert.Throws<OrchestratorException>(() => _planner.Parse(Schedule("0 * * * *", zone)));

        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
        Assert.Equal("schedule.time_zone", e.Field);
        Assert.Contains(zone, e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("retention.keep_last")]
    [InlineData("retention.hourly")]
    [InlineData("retention.daily")]
    [InlineData("retention.weekly")]
    [InlineData("retention.monthly")]
    public void Parse_NegativeRetention_InvalidArgumentNamingTheField(string field)
    {
        var retention = field switch
        {
            "retention.keep_last" => new RetentionPolicy(KeepLast: -1, Daily: 7),
            "retention.hourly" => new RetentionPolicy(KeepLast: 3, Hourly: -2),
            "retention.daily" => new RetentionPolicy(KeepLast: 3, Daily: -1),
            "retention.weekly" => new RetentionPolicy(KeepLast: 3, Weekly: -5),
            _ => new RetentionPolicy(KeepLast: 3, Monthly: -1),
        };

        var e = Assert.Throws<OrchestratorException>(() => _planner.Parse(Schedule("0 * * * *", retention: retention)));

        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
        Assert.Equal(field, e.Field);
        Assert.Contains("must be 0 or more", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_NoRetentionAtAll_InvalidArgumentNamingRetention()
    {
        var e = Assert.Throws<OrchestratorException>(() => _planner.Parse(Schedule("0 * * * *", retention: new RetentionPolicy())));

        Assert.Equal("retention", e.Field);
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(24 * 3600 + 1)]
    public void Parse_JitterOutOfRange_InvalidArgumentNamingJitter(int seconds)
    {
        var e = Assert.Throws<OrchestratorException>(() => _planner.Parse(Schedule("0 * * * *") with { Jitter = TimeSpan.FromSeconds(seconds) }));

        Assert.Equal("schedule.jitter", e.Field);
    }

    [Fact]
    public void Parse_BlankTimeZone_MeansUtc()
    {
        var parsed = _planner.Parse(Schedule("0 * * * *", zone: ""));

        Assert.Equal(TimeZoneInfo.Utc.Id, parsed.Zone.Id);
        Assert.Equal(TimeZoneInfo.Utc.Id, parsed.Source.TimeZone);
    }

    [Fact]
    public void FirstDue_HourlyCron_IsTheNextFullHour()
    {
        var parsed = _planner.Parse(Schedule("0 * * * *"));

        Assert.Equal(At("2025-03-01T11:00:00Z"), _planner.FirstDue(parsed, Vm));
    }

    [Fact]
    public void FirstDue_SixFields_HasSecondPrecision()
    {
        var parsed = _planner.Parse(Schedule("*/20 * * * * *"));

        Assert.Equal(At("2025-03-01T10:17:40Z"), _planner.FirstDue(parsed, Vm));
    }

    [Fact]
    public void FirstDue_Macro_IsAccepted()
    {
        var parsed = _planner.Parse(Schedule("@daily"));

        Assert.Equal(At("2025-03-02T00:00:00Z"), _planner.FirstDue(parsed, Vm));
    }

    [Fact]
    public void NextDue_DailyInNewYork_StaysAtNineLocalAcrossSpringForward()
    {
        // 2025-03-09 02:00 EST: clocks go to 03:00 EDT. 09:00 local is 14:00Z before, 13:00Z after.
        var parsed = _planner.Parse(Schedule("0 9 * * *", "America/New_York"));

        var dues = Dues(parsed, At("2025-03-07T00:00:00Z"), 4);

        Assert.Equal([At("2025-03-07T14:00:00Z"), At("2025-03-08T14:00:00Z"), At("2025-03-09T13:00:00Z"), At("2025-03-10T13:00:00Z")], dues);
    }

    [Fact]
    public void NextDue_TimeInsideTheSpringForwardGap_RunsRightAfterTheGap()
    {
        // 02:30 does not exist on 2025-03-09 in New York: the run moves to 03:00 EDT (07:00Z), not to the next day.
        var parsed = _planner.Parse(Schedule("30 2 * * *", "America/New_York"));

        var dues = Dues(parsed, At("2025-03-08T12:00:00Z"), 2);

        Assert.Equal([At("2025-03-09T07:00:00Z"), At("2025-03-10T06:30:00Z")], dues);
    }

    [Fact]
    public void NextDue_DailyTimeInsideTheRepeatedHour_RunsOnlyOnce()
    {
        // 2025-11-02 02:00 EDT: clocks go back to 01:00 EST, so 01:30 happens twice. A daily job runs at the first.
        var parsed = _planner.Parse(Schedule("30 1 * * *", "America/New_York"));

        var dues = Dues(parsed, At("2025-11-01T12:00:00Z"), 2);

        Assert.Equal([At("2025-11-02T05:30:00Z"), At("2025-11-03T06:30:00Z")], dues);
    }

    [Fact]
    public void NextDue_HourlyAcrossFallBack_RunsEveryRealHour()
    {
        var parsed = _planner.Parse(Schedule("0 * * * *", "America/New_York"));

        var dues = Dues(parsed, At("2025-11-02T04:30:00Z"), 3);

        // 01:00 EDT, 01:00 EST, 02:00 EST: the repeated hour is not skipped.
        Assert.Equal([At("2025-11-02T05:00:00Z"), At("2025-11-02T06:00:00Z"), At("2025-11-02T07:00:00Z")], dues);
    }

    [Fact]
    public void NextDue_TimeZoneChangesTheInstant()
    {
        var utc = _planner.Parse(Schedule("0 3 * * *", "UTC"));
        var tokyo = _planner.Parse(Schedule("0 3 * * *", "Asia/Tokyo"));

        Assert.Equal(At("2025-03-02T03:00:00Z"), _planner.FirstDue(utc, Vm));
        Assert.Equal(At("2025-03-01T18:00:00Z"), _planner.FirstDue(tokyo, Vm));
    }

    [Fact]
    public void JitterOffset_SameVm_IsStableAndWithinRange()
    {
        var jitter = TimeSpan.FromMinutes(10);

        var offset = CheckpointSchedulePlanner.JitterOffset(Vm, jitter);

        Assert.Equal(offset, CheckpointSchedulePlanner.JitterOffset(Vm, jitter));
        Assert.InRange(offset, TimeSpan.Zero, jitter);
        Assert.Equal(TimeSpan.Zero, CheckpointSchedulePlanner.JitterOffset(Vm, TimeSpan.Zero));
    }

    [Fact]
    public void JitterOffset_ManyVms_SpreadOverTheRange()
    {
        var jitter = TimeSpan.FromMinutes(10);

        var offsets = Enumerable.Range(1, 50).Select(i => CheckpointSchedulePlanner.JitterOffset($"kvm-01/web-{i}", jitter)).ToList();

        Assert.All(offsets, o => Assert.InRange(o, TimeSpan.Zero, jitter));
        Assert.True(offsets.Distinct().Count() >= 45, "offsets should differ between VMs");
        Assert.Contains(offsets, o => o < TimeSpan.FromMinutes(5));
        Assert.Contains(offsets, o => o > TimeSpan.FromMinutes(5));
    }

    [Fact]
    public void FirstDue_WithJitter_IsTheOccurrencePlusTheVmsOffset()
    {
        var parsed = _planner.Parse(Schedule("0 * * * *") with { Jitter = TimeSpan.FromMinutes(10) });
        var offset = CheckpointSchedulePlanner.JitterOffset(Vm, TimeSpan.FromMinutes(10));

        var first = _planner.FirstDue(parsed, Vm);

        // 10:17:30 now: 10:00 + offset may still be ahead; otherwise 11:00 + offset.
        var expected = At("2025-03-01T10:00:00Z") + offset > _clock.GetUtcNow() ? At("2025-03-01T10:00:00Z") + offset : At("2025-03-01T11:00:00Z") + offset;
        Assert.Equal(expected, first);
        Assert.Equal(first + TimeSpan.FromHours(1), CheckpointSchedulePlanner.NextDueAfter(parsed, Vm, first));
    }

    [Fact]
    public void Decide_BeforeTheDueTime_DoesNotRun()
    {
        var parsed = _planner.Parse(Schedule("0 * * * *"));
        var due = _planner.FirstDue(parsed, Vm);
        _clock.SetUtcNow(due - TimeSpan.FromMilliseconds(1));

        var decision = _planner.Decide(parsed, Vm, due);

        Assert.False(decision.Run);
        Assert.Equal(due, decision.NextDueAt);
        Assert.Equal(TimeSpan.FromMilliseconds(1), _planner.TimerWait(due));
    }

    [Fact]
    public void Decide_AtTheDueTime_RunsOnceAndMovesToTheNextSlot()
    {
        var parsed = _planner.Parse(Schedule("0 * * * *"));
        var due = _planner.FirstDue(parsed, Vm);
        _clock.SetUtcNow(due);

        var decision = _planner.Decide(parsed, Vm, due);

        Assert.True(decision.Run);
        Assert.Equal(due, decision.DueAt);
        Assert.Equal(0, decision.SkippedSlots);
        Assert.Equal(due + TimeSpan.FromHours(1), decision.NextDueAt);
        Assert.Equal(TimeSpan.Zero, _planner.TimerWait(due));
    }

    [Fact]
    public void Decide_AfterDowntime_RunsOnceNotOncePerMissedSlot()
    {
        var parsed = _planner.Parse(Schedule("0 * * * *"));
        var due = At("2025-03-01T11:00:00Z");

        // Down from before 11:00 until 15:30: 11, 12, 13, 14 and 15 o'clock passed.
        _clock.SetUtcNow(At("2025-03-01T15:30:00Z"));
        var decision = _planner.Decide(parsed, Vm, due);

        Assert.True(decision.Run);
        Assert.Equal(due, decision.DueAt);
        Assert.Equal(4, decision.SkippedSlots);
        Assert.Equal(At("2025-03-01T16:00:00Z"), decision.NextDueAt);

        // After that one run the next decision waits for 16:00.
        Assert.False(_planner.Decide(parsed, Vm, decision.NextDueAt).Run);
    }

    [Fact]
    public void Decide_CatchUpJustBeforeASlot_RecordsTheDecisionTimeSoTheNextSlotIsAfterTheRun()
    {
        // The catch-up decided a moment before 15:00 (14:00 skipped, 15:00 not yet due): the run's time is that moment,
        // so the next run, for 15:00, serves a due time after the catch-up (a clock read later could pass 15:00).
        var parsed = _planner.Parse(Schedule("0 * * * *"));
        _clock.SetUtcNow(At("2025-03-01T14:59:59.999Z"));
        var decision = _planner.Decide(parsed, Vm, At("2025-03-01T13:00:00Z"));
        _clock.SetUtcNow(At("2025-03-01T15:00:00.001Z"));

        Assert.Equal((true, 1), (decision.Run, decision.SkippedSlots));
        Assert.Equal(At("2025-03-01T14:59:59.999Z"), decision.DecidedAt);
        Assert.Equal(At("2025-03-01T15:00:00Z"), decision.NextDueAt);
        Assert.True(decision.NextDueAt > decision.DecidedAt);
    }

    [Fact]
    public void Decide_AfterDowntimeWithJitter_CountsSlotsByTheirJitteredDueTimes()
    {
        var jitter = TimeSpan.FromMinutes(30);
        var parsed = _planner.Parse(Schedule("0 * * * *") with { Jitter = jitter });
        var offset = CheckpointSchedulePlanner.JitterOffset(Vm, jitter);
        var due = At("2025-03-01T11:00:00Z") + offset;

        // Just before 14:00 + offset: the slots of 12:00 and 13:00 were missed as well.
        _clock.SetUtcNow(At("2025-03-01T14:00:00Z") + offset - TimeSpan.FromSeconds(1));
        var decision = _planner.Decide(parsed, Vm, due);

        Assert.Equal(2, decision.SkippedSlots);
        Assert.Equal(At("2025-03-01T14:00:00Z") + offset, decision.NextDueAt);
    }

    [Fact]
    public void TimerWait_FarAway_IsCappedAtTheMaximum()
    {
        var planner = new CheckpointSchedulePlanner(_clock, TimeSpan.FromMinutes(5));

        Assert.Equal(TimeSpan.FromMinutes(5), planner.TimerWait(_clock.GetUtcNow() + TimeSpan.FromHours(3)));
        Assert.Equal(TimeSpan.FromMinutes(2), planner.TimerWait(_clock.GetUtcNow() + TimeSpan.FromMinutes(2)));
    }

    [Fact]
    public void SelectForPruning_KeepLastThreeOfHourly_PrunesTheRestOldestFirst()
    {
        var checkpoints = Hourly(At("2025-03-01T00:00:00Z"), 10);

        var pruned = CheckpointSchedulePlanner.SelectForPruning(checkpoints, new RetentionPolicy(KeepLast: 3), TimeZoneInfo.Utc);

        Assert.Equal(checkpoints.Take(7).Select(c => c.Name), pruned.Select(c => c.Name));
    }

    [Fact]
    public void SelectForPruning_KeepLastPlusDaily_KeepsExactlyTheNewestAndOnePerDay()
    {
        // Hourly for three days: 72 checkpoints.
        var checkpoints = Hourly(At("2025-03-01T00:00:00Z"), 72);

        var pruned = CheckpointSchedulePlanner.SelectForPruning(checkpoints, new RetentionPolicy(KeepLast: 3, Daily: 2), TimeZoneInfo.Utc);

        var kept = checkpoints.Except(pruned).Select(c => c.CreatedAt).Order().ToList();
        Assert.Equal([At("2025-03-02T23:00:00Z"), At("2025-03-03T21:00:00Z"), At("2025-03-03T22:00:00Z"), At("2025-03-03T23:00:00Z")], kept);
        Assert.Equal(68, pruned.Count);
    }

    [Fact]
    public void SelectForPruning_EveryRule_KeepsTheUnionOfWhatEachKeeps()
    {
        // Daily at 12:00Z from 2025-01-01 to 2025-03-15 (74 checkpoints).
        var checkpoints = Enumerable.Range(0, 74).Select(i => Checkpoint(At("2025-01-01T12:00:00Z").AddDays(i))).ToList();
        var policy = new RetentionPolicy(KeepLast: 2, Hourly: 1, Daily: 4, Weekly: 3, Monthly: 3);

        var pruned = CheckpointSchedulePlanner.SelectForPruning(checkpoints, policy, TimeZoneInfo.Utc);

        var kept = checkpoints.Except(pruned).Select(c => c.CreatedAt.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture)).Order().ToList();

        // keep_last 2: 03-15, 03-14. hourly 1: 03-15. daily 4: 03-15..03-12. weekly 3 (ISO, Monday first): Sun 03-09
        // and Sun 03-02 are the newest of the two weeks before the current one (whose newest is 03-15).
        // monthly 3: 03-15, 02-28, 01-31.
        Assert.Equal(["2025-01-31", "2025-02-28", "2025-03-02", "2025-03-09", "2025-03-12", "2025-03-13", "2025-03-14", "2025-03-15"], kept);
    }

    [Fact]
    public void SelectForPruning_DailyBuckets_AreDaysInTheSchedulesTimeZone()
    {
        var a = Checkpoint(At("2025-01-01T12:00:00Z"));
        var b = Checkpoint(At("2025-01-01T23:30:00Z"));
        var c = Checkpoint(At("2025-01-02T00:30:00Z"));
        var policy = new RetentionPolicy(Daily: 2);

        // UTC: Jan 2 {c}, Jan 1 {b, a}. New York (UTC-5): all on Jan 1. Tokyo (UTC+9): Jan 2 {c, b}, Jan 1 {a}.
        Assert.Equal([a], CheckpointSchedulePlanner.SelectForPruning([a, b, c], policy, TimeZoneInfo.Utc));
        Assert.Equal([a, b], CheckpointSchedulePlanner.SelectForPruning([a, b, c], policy, Zone("America/New_York")));
        Assert.Equal([b], CheckpointSchedulePlanner.SelectForPruning([a, b, c], policy, Zone("Asia/Tokyo")));
    }

    [Fact]
    public void SelectForPruning_HourlyAcrossFallBack_CountsTheRepeatedHourTwice()
    {
        // 01:10 EDT, 01:40 EDT, then 01:10 EST an hour after the first: three checkpoints in two real hours.
        var x = Checkpoint(At("2025-11-02T05:10:00Z"));
        var y = Checkpoint(At("2025-11-02T05:40:00Z"));
        var z = Checkpoint(At("2025-11-02T06:10:00Z"));

        var pruned = CheckpointSchedulePlanner.SelectForPruning([x, y, z], new RetentionPolicy(Hourly: 2), Zone("America/New_York"));

        Assert.Equal([x], pruned);
    }

    [Fact]
    public void SelectForPruning_NothingToPrune_ReturnsEmpty()
    {
        var checkpoints = Hourly(At("2025-03-01T00:00:00Z"), 3);

        Assert.Empty(CheckpointSchedulePlanner.SelectForPruning(checkpoints, new RetentionPolicy(KeepLast: 3), TimeZoneInfo.Utc));
        Assert.Empty(CheckpointSchedulePlanner.SelectForPruning([], new RetentionPolicy(KeepLast: 1), TimeZoneInfo.Utc));
    }

    private static CheckpointSchedule Schedule(string cron, string zone = "UTC", RetentionPolicy? retention = null) =>
        new(cron, zone, TimeSpan.Zero, retention ?? KeepTen);

    private static List<DateTimeOffset> Dues(ParsedSchedule parsed, DateTimeOffset from, int count)
    {
        var dues = new List<DateTimeOffset>();
        var at = from;
        for (var i = 0; i < count; i++)
        {
            at = CheckpointSchedulePlanner.NextDueAfter(parsed, Vm, at);
            dues.Add(at);
        }

        return dues;
    }

    private static List<RetainedCheckpoint> Hourly(DateTimeOffset start, int count) =>
        [.. Enumerable.Range(0, count).Select(i => Checkpoint(start.AddHours(i)))];

    private static RetainedCheckpoint Checkpoint(DateTimeOffset at) => new(CheckpointNames.ForTime(CheckpointNames.SchedulePrefix, at), at);

    private static TimeZoneInfo Zone(string id) => TimeZoneInfo.FindSystemTimeZoneById(id);

    private static DateTimeOffset At(string text) => DateTimeOffset.Parse(text, CultureInfo.InvariantCulture);
}
