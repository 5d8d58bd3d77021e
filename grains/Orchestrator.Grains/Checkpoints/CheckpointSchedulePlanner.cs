using System.Globalization;
using System.Text;
using Cronos;

namespace Orchestrator.Grains.Checkpoints;

/// <summary>A schedule that passed validation: its parsed cron expression and time zone.</summary>
public sealed record ParsedSchedule(CheckpointSchedule Source, CronExpression Cron, TimeZoneInfo Zone)
{
    public TimeSpan Jitter => Source.Jitter;

    public RetentionPolicy Retention => Source.Retention;
}

/// <summary>What to do when the schedule is looked at.</summary>
/// <param name="Run">True when a checkpoint is due now.</param>
/// <param name="DueAt">The due time the run serves (the persisted next due time).</param>
/// <param name="SkippedSlots">Further due times that passed without a run (downtime): they are not run one by one.</param>
/// <param name="NextDueAt">The next due time after now (when <paramref name="Run"/>), else the current one.</param>
/// <param name="DecidedAt">The "now" the decision was made at: the run's recorded time, so that the skipped slots, the
/// next due time and the run's time agree (a run recorded a moment later could seem to pass a due time it did not serve).</param>
public sealed record ScheduleDecision(bool Run, DateTimeOffset DueAt, int SkippedSlots, DateTimeOffset NextDueAt, DateTimeOffset DecidedAt);

/// <summary>A scheduled checkpoint as retention sees it.</summary>
public sealed record RetainedCheckpoint(string Name, DateTimeOffset CreatedAt);

/// <summary>
/// The pure logic of checkpoint schedules: validation, due times (cron in a time zone, plus a per-VM jitter
/// offset), catch-up after downtime and retention. No I/O; "now" comes from the <see cref="TimeProvider"/>.
/// </summary>
/// <param name="time">The clock every decision reads "now" from.</param>
/// <param name="maxTimerWait">
/// Longest a waiting grain timer sleeps before it looks again (default one hour; reminders wake the grain anyway).
/// Tests with a fake clock make it short, so advancing the fake clock is noticed at once.
/// </param>
public sealed partial class CheckpointSchedulePlanner(TimeProvider time, TimeSpan? maxTimerWait = null)
{
    private readonly TimeSpan _maxTimerWait = maxTimerWait ?? TimeSpan.FromHours(1);

    /// <summary>Upper bound of the jitter a schedule may ask for.</summary>
    public static readonly TimeSpan MaxJitter = TimeSpan.FromDays(1);

    /// <summary>Upper bound of each retention count.</summary>
    public const int MaxRetentionCount = 10_000;

    /// <summary>Counting skipped slots stops here (an every-second schedule after a month down).</summary>
    public const int MaxCountedSkippedSlots = 10_000;

    /// <summary>Now, by the planner's clock.</summary>
    public DateTimeOffset Now => time.GetUtcNow();

    /// <summary>How long a grain timer should wait before it looks at the schedule again: until the due time, at most the maximum wait.</summary>
    public TimeSpan TimerWait(DateTimeOffset nextDueAt)
    {
        var wait = nextDueAt - time.GetUtcNow();
        return wait <= TimeSpan.Zero ? TimeSpan.Zero : wait > _maxTimerWait ? _maxTimerWait : wait;
    }

    /// <summary>
    /// Validates a schedule; throws <see cref="OrchestratorException"/> InvalidArgument naming the field:
    /// schedule.cron, schedule.time_zone, schedule.jitter, retention.keep_last, retention.hourly, retention.daily,
    /// retention.weekly, retention.monthly, or retention (when nothing would ever be pruned).
    /// </summary>
    public ParsedSchedule Parse(CheckpointSchedule schedule)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        var cron = ParseCron(schedule.Cron);
        var zone = ParseTimeZone(schedule.TimeZone);
        if (schedule.Jitter < TimeSpan.Zero)
        {
            throw OrchestratorException.InvalidArgument("schedule.jitter", $"must not be negative, not {schedule.Jitter}");
        }

        if (schedule.Jitter > MaxJitter)
        {
            throw OrchestratorException.InvalidArgument("schedule.jitter", $"must be at most {MaxJitter}, not {schedule.Jitter}");
        }

        ValidateRetention(schedule.Retention, "scheduled checkpoint", "the qcow2 images");
        if (cron.GetNextOccurrence(time.GetUtcNow(), zone) is null)
        {
            throw OrchestratorException.InvalidArgument("schedule.cron", $"{OrchestratorException.Quote(schedule.Cron)} never fires");
        }

        var normalized = schedule with { Cron = schedule.Cron.Trim(), TimeZone = zone.Id };
        return new ParsedSchedule(normalized, cron, zone);
    }

    /// <summary>This VM's fixed offset within [0, jitter] (whole milliseconds), the same on every silo and run.</summary>
    public static TimeSpan JitterOffset(string vmKey, TimeSpan jitter)
    {
        if (jitter <= TimeSpan.Zero)
        {
            return TimeSpan.Zero;
        }

        // FNV-1a 64: stable across processes (string.GetHashCode is randomised per process).
        var hash = 0xcbf29ce484222325UL;
        foreach (var b in Encoding.UTF8.GetBytes(vmKey))
        {
            hash = (hash ^ b) * 0x100000001b3UL;
        }

        var range = (ulong)jitter.TotalMilliseconds + 1;
        return TimeSpan.FromMilliseconds(hash % range);
    }

    /// <summary>The first due time strictly after <paramref name="after"/>: a cron occurrence plus the VM's jitter offset.</summary>
    public static DateTimeOffset NextDueAfter(ParsedSchedule schedule, string vmKey, DateTimeOffset after)
    {
        var offset = JitterOffset(vmKey, schedule.Jitter);
        var occurrence = schedule.Cron.GetNextOccurrence(after - offset, schedule.Zone)
            ?? throw new OrchestratorException(ErrorCode.FailedPrecondition, $"the schedule '{schedule.Source.Cron}' has no occurrence after {after:u}");
        return occurrence + offset;
    }

    /// <summary>The first due time of a new (or changed) schedule: the next one after now.</summary>
    public DateTimeOffset FirstDue(ParsedSchedule schedule, string vmKey) => NextDueAfter(schedule, vmKey, time.GetUtcNow());

    /// <summary>
    /// Whether a checkpoint is due now, given the persisted next due time. However many due times passed while the
    /// silo was down, the answer is one run (catch-up once), and the next due time is the first one after now.
    /// </summary>
    public ScheduleDecision Decide(ParsedSchedule schedule, string vmKey, DateTimeOffset nextDueAt)
    {
        var now = time.GetUtcNow();
        if (now < nextDueAt)
        {
            return new ScheduleDecision(false, nextDueAt, 0, nextDueAt, now);
        }

        var offset = JitterOffset(vmKey, schedule.Jitter);
        var skipped = schedule.Cron
            .GetOccurrences(nextDueAt - offset, now - offset, schedule.Zone, fromInclusive: false, toInclusive: true)
            .Take(MaxCountedSkippedSlots)
            .Count();
        return new ScheduleDecision(true, nextDueAt, skipped, NextDueAfter(schedule, vmKey, now), now);
    }

    /// <summary>
    /// The scheduled checkpoints retention removes. A checkpoint is kept when any rule keeps it (restic "forget"):
    /// keep_last keeps the newest N; hourly/daily/weekly/monthly keep, for each of the newest N hours/days/ISO
    /// weeks/months that hold a checkpoint, the newest checkpoint in it. Buckets are calendar periods in the
    /// schedule's time zone; an hour is a real hour (the hour repeated when DST ends counts twice).
    /// </summary>
    public static IReadOnlyList<RetainedCheckpoint> SelectForPruning(IEnumerable<RetainedCheckpoint> scheduled, RetentionPolicy policy, TimeZoneInfo zone)
    {
        var newestFirst = scheduled
            .OrderByDescending(c => c.CreatedAt)
            .ThenByDescending(c => c.Name, StringComparer.Ordinal)
            .ToList();
        var keep = new HashSet<RetainedCheckpoint>(newestFirst.Take(Math.Max(0, policy.KeepLast)));
        KeepNewestPerBucket(newestFirst, policy.Hourly, c => HourBucket(c, zone), keep);
        KeepNewestPerBucket(newestFirst, policy.Daily, c => Local(c, zone).ToString("yyyy-MM-dd", CultureInfo.InvariantCulture), keep);
        KeepNewestPerBucket(newestFirst, policy.Weekly, c => WeekBucket(c, zone), keep);
        KeepNewestPerBucket(newestFirst, policy.Monthly, c => Local(c, zone).ToString("yyyy-MM", CultureInfo.InvariantCulture), keep);
        return [.. newestFirst.Where(c => !keep.Contains(c)).Reverse()];
    }

    private static void KeepNewestPerBucket(List<RetainedCheckpoint> newestFirst, int count, Func<RetainedCheckpoint, string> bucket, HashSet<RetainedCheckpoint> keep)
    {
        string? last = null;
        var kept = 0;
        foreach (var checkpoint in newestFirst)
        {
            if (kept >= count)
            {
                return;
            }

            var key = bucket(checkpoint);
            if (key != last)
            {
                keep.Add(checkpoint);
                last = key;
                kept++;
            }
        }
    }

    private static DateTimeOffset Local(RetainedCheckpoint c, TimeZoneInfo zone) => TimeZoneInfo.ConvertTime(c.CreatedAt, zone);

    private static string HourBucket(RetainedCheckpoint c, TimeZoneInfo zone)
    {
        var local = Local(c, zone);
        return local.ToString("yyyy-MM-ddTHH", CultureInfo.InvariantCulture) + local.Offset.ToString("c", CultureInfo.InvariantCulture);
    }

    private static string WeekBucket(RetainedCheckpoint c, TimeZoneInfo zone)
    {
        var local = Local(c, zone).DateTime;
        return $"{ISOWeek.GetYear(local)}-W{ISOWeek.GetWeekOfYear(local):00}";
    }

    /// <summary>Throws InvalidArgument (retention.keep_last, ..., or retention) unless the counts are sane and something is ever pruned.</summary>
    public static void ValidateRetention(RetentionPolicy? retention, string what, string storage)
    {
        if (retention is null)
        {
            throw OrchestratorException.InvalidArgument("retention", "a retention policy is required");
        }

        CheckCount("retention.keep_last", retention.KeepLast);
        CheckCount("retention.hourly", retention.Hourly);
        CheckCount("retention.daily", retention.Daily);
        CheckCount("retention.weekly", retention.Weekly);
        CheckCount("retention.monthly", retention.Monthly);
        if (retention is { KeepLast: 0, Hourly: 0, Daily: 0, Weekly: 0, Monthly: 0 })
        {
            throw OrchestratorException.InvalidArgument(
                "retention",
                $"set at least one of keep_last, hourly, daily, weekly, monthly: without retention every {what} would be kept and {storage} would grow without bound");
        }
    }

    internal static CronExpression ParseCron(string? expression)
    {
        const string Shape = "5 fields (minute hour day-of-month month day-of-week), 6 with seconds first, or a macro such as @hourly";
        if (string.IsNullOrWhiteSpace(expression))
        {
            throw OrchestratorException.InvalidArgument("schedule.cron", $"a cron expression is required: {Shape}");
        }

        var text = expression.Trim();
        var fields = text.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length;
        var format = fields == 6 ? CronFormat.IncludeSeconds : CronFormat.Standard;
        if (!text.StartsWith('@') && fields is not (5 or 6))
        {
            throw OrchestratorException.InvalidArgument("schedule.cron", $"{OrchestratorException.Quote(text)} has {fields} field{(fields == 1 ? "" : "s")}; expected {Shape}");
        }

        try
        {
            return CronExpression.Parse(text, format);
        }
        catch (CronFormatException e)
        {
            throw OrchestratorException.InvalidArgument("schedule.cron", $"{OrchestratorException.Quote(text)} is not a valid cron expression: {e.Message}");
        }
    }

    internal static TimeZoneInfo ParseTimeZone(string? id)
    {
        if (string.IsNullOrWhiteSpace(id))
        {
            return TimeZoneInfo.Utc;
        }

        const string Known = "use an IANA name such as Europe/Berlin, America/New_York or UTC";
        var trimmed = id.Trim();

        // An IANA id names a file under the zoneinfo directory: only its own shape is looked up, never a path that climbs out.
        if (trimmed.Length > 64 || !TimeZonePattern().IsMatch(trimmed) || trimmed.Split('/').Any(step => step is "." or ".."))
        {
            throw OrchestratorException.InvalidArgument("schedule.time_zone", $"{OrchestratorException.Quote(id)} is not a time zone id (1-64 letters, digits, '_', '+', '-', '.' in '/'-separated parts); {Known}");
        }

        try
        {
            return TimeZoneInfo.FindSystemTimeZoneById(trimmed);
        }
        catch (Exception e) when (e is TimeZoneNotFoundException or InvalidTimeZoneException or System.Security.SecurityException or IOException or UnauthorizedAccessException)
        {
            throw OrchestratorException.InvalidArgument("schedule.time_zone", $"{OrchestratorException.Quote(id)} is not a known time zone; {Known}");
        }
    }

    private static void CheckCount(string field, int value)
    {
        if (value < 0)
        {
            throw OrchestratorException.InvalidArgument(field, $"must be 0 or more, not {value}");
        }

        if (value > MaxRetentionCount)
        {
            throw OrchestratorException.InvalidArgument(field, $"must be at most {MaxRetentionCount}, not {value}");
        }
    }

    [System.Text.RegularExpressions.GeneratedRegex("^[A-Za-z0-9_+.-]+(/[A-Za-z0-9_+.-]+)*\\z")]
    private static partial System.Text.RegularExpressions.Regex TimeZonePattern();
}
