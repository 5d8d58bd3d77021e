using System.Globalization;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Output;

namespace Orchestrator.Cli.Views;

/// <summary>A VM's checkpoint schedule as <c>checkpoint schedule set/show</c> print it. The JSON shape is documented in README.md.</summary>
internal sealed record CheckpointScheduleView(
    string Key,
    string Cron,
    string TimeZone,
    double JitterSeconds,
    RetentionView Retention,
    DateTime? NextDueAt,
    DateTime? UpdatedAt,
    int Runs,
    ScheduledRunView? LastRun,
    IReadOnlyList<string> ScheduledCheckpoints,
    IReadOnlyList<ScheduledRunView> RecentRuns)
{
    public static CheckpointScheduleView From(CheckpointScheduleStatus status) => new(
        status.Key,
        status.Schedule?.Cron ?? "",
        status.Schedule?.TimeZone is { Length: > 0 } zone ? zone : "UTC",
        status.Schedule?.Jitter is { } jitter ? jitter.ToTimeSpan().TotalSeconds : 0,
        RetentionView.From(status.Retention ?? new RetentionPolicy()),
        Timestamps.ToUtc(status.NextDueAt),
        Timestamps.ToUtc(status.UpdatedAt),
        status.Runs,
        status.LastRun is { } run ? ScheduledRunView.From(run) : null,
        [.. status.ScheduledCheckpoints],
        [.. status.RecentRuns.Select(ScheduledRunView.From)]);

    /// <summary>Sorted by key, so output is stable whatever order the server answers in.</summary>
    public static IReadOnlyList<CheckpointScheduleView> FromList(IEnumerable<CheckpointScheduleStatus> schedules) =>
        [.. schedules.Select(From).OrderBy(s => s.Key, StringComparer.Ordinal)];

    public static void WriteTable(IReadOnlyList<CheckpointScheduleView> schedules, TextWriter writer, bool color)
    {
        if (schedules.Count == 0)
        {
            writer.WriteLine("No checkpoint schedules.");
            return;
        }

        var table = new TableWriter(
            new TableColumn("VM"),
            new TableColumn("CRON"),
            new TableColumn("TIME ZONE"),
            new TableColumn("RETENTION"),
            new TableColumn("NEXT DUE"),
            new TableColumn("LAST RUN"),
            new TableColumn("KEPT", AlignRight: true));
        foreach (CheckpointScheduleView schedule in schedules)
        {
            table.AddRow(
                schedule.Key,
                schedule.Cron,
                schedule.TimeZone,
                schedule.Retention.ToText(),
                TextFormat.Timestamp(schedule.NextDueAt),
                schedule.LastRun?.Summary(),
                schedule.ScheduledCheckpoints.Count.ToString(CultureInfo.InvariantCulture));
        }

        table.WriteTo(writer, color);
    }

    public static void WriteDetails(CheckpointScheduleView schedule, TextWriter writer, bool color)
    {
        new PropertyListWriter()
            .Add("VM", schedule.Key)
            .Add("Cron", schedule.Cron)
            .Add("Time zone", schedule.TimeZone)
            .Add("Jitter", schedule.JitterSeconds > 0 ? $"{schedule.JitterSeconds.ToString("0.###", CultureInfo.InvariantCulture)} s" : null)
            .Add("Retention", schedule.Retention.ToText())
            .Add("Next due", TextFormat.Timestamp(schedule.NextDueAt))
            .Add("Runs", schedule.Runs.ToString(CultureInfo.InvariantCulture))
            .Add("Last run", schedule.LastRun?.Summary())
            .Add("Last error", schedule.LastRun?.Error)
            .Add("Kept", schedule.ScheduledCheckpoints.Count == 0 ? null : string.Join(", ", schedule.ScheduledCheckpoints))
            .WriteTo(writer, color);
    }
}

internal sealed record RetentionView(int KeepLast, int Hourly, int Daily, int Weekly, int Monthly)
{
    public static RetentionView From(RetentionPolicy policy) =>
        new(policy.KeepLast, policy.Hourly, policy.Daily, policy.Weekly, policy.Monthly);

    /// <summary>"last 3, daily 7" for people.</summary>
    public string ToText()
    {
        var parts = new List<string>();
        Add("last", KeepLast);
        Add("hourly", Hourly);
        Add("daily", Daily);
        Add("weekly", Weekly);
        Add("monthly", Monthly);
        return string.Join(", ", parts);

        void Add(string label, int count)
        {
            if (count > 0)
            {
                parts.Add($"{label} {count.ToString(CultureInfo.InvariantCulture)}");
            }
        }
    }
}

internal sealed record ScheduledRunView(DateTime? At, DateTime? DueAt, string? Checkpoint, int SkippedSlots, string? Error, IReadOnlyList<string> Pruned)
{
    public static ScheduledRunView From(ScheduledRun run) => new(
        Timestamps.ToUtc(run.At),
        Timestamps.ToUtc(run.DueAt),
        run.Checkpoint.Length == 0 ? null : run.Checkpoint,
        run.SkippedSlots,
        run.Error.Length == 0 ? null : run.Error,
        [.. run.Pruned]);

    public string Summary()
    {
        var text = $"{TextFormat.Timestamp(At)} {Checkpoint ?? "failed"}";
        if (SkippedSlots > 0)
        {
            text += $" (caught up {SkippedSlots.ToString(CultureInfo.InvariantCulture)} missed)";
        }

        return text;
    }
}
