using System.Globalization;
using System.Text.Json.Serialization;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Output;

namespace Orchestrator.Cli.Views;

/// <summary>A policy run as the <c>policy</c> commands print it. The JSON shape is documented in README.md.</summary>
internal sealed record PolicyRunView(
    string RunId,
    string Policy,
    int PolicyVersion,
    string Kind,
    string Trigger,
    string? RetryOf,
    string State,
    DateTime? StartedAt,
    DateTime? EndedAt,
    string? TraceId,
    ConcurrencyView Concurrency,
    string? Error,
    IReadOnlyList<PolicyTargetView> Targets)
{
    /// <summary>Targets sorted by host, then VM, so output is stable whatever order the server answers in.</summary>
    public static PolicyRunView From(PolicyRun run) => new(
        run.RunId,
        run.Policy,
        run.PolicyVersion,
        EnumNames.Of(run.Kind),
        EnumNames.Of(run.Trigger),
        NullIfEmpty(run.RetryOf),
        EnumNames.Of(run.State),
        Timestamps.ToUtc(run.StartedAt),
        Timestamps.ToUtc(run.EndedAt),
        NullIfEmpty(run.TraceId),
        ConcurrencyView.From(run.Concurrency),
        NullIfEmpty(run.Error),
        [.. run.Targets.Select(PolicyTargetView.From).OrderBy(t => t.Host, StringComparer.Ordinal).ThenBy(t => t.Vm, StringComparer.Ordinal)]);

    /// <summary>The server's order: newest first.</summary>
    public static IReadOnlyList<PolicyRunView> FromList(IEnumerable<PolicyRun> runs) => [.. runs.Select(From)];

    public static void WriteTable(IReadOnlyList<PolicyRunView> runs, TextWriter writer, bool color)
    {
        if (runs.Count == 0)
        {
            writer.WriteLine("No runs.");
            return;
        }

        var table = new TableWriter(
            new TableColumn("RUN"),
            new TableColumn("TRIGGER"),
            new TableColumn("STATE"),
            new TableColumn("STARTED"),
            new TableColumn("DURATION", AlignRight: true),
            new TableColumn("TARGETS"),
            new TableColumn("ERROR"));
        foreach (PolicyRunView run in runs)
        {
            table.AddRow(run.RunId, run.Trigger, run.State, TextFormat.Timestamp(run.StartedAt), DurationText(run), run.Summary(), run.Error);
        }

        table.WriteTo(writer, color);
    }

    public static void WriteDetails(PolicyRunView run, TextWriter writer, bool color)
    {
        new PropertyListWriter()
            .Add("Run", run.RunId)
            .Add("Policy", $"{run.Policy} (version {run.PolicyVersion.ToString(CultureInfo.InvariantCulture)})")
            .Add("Kind", run.Kind)
            .Add("Trigger", run.RetryOf is { } retryOf ? $"{run.Trigger} of {retryOf}" : run.Trigger)
            .Add("State", run.State)
            .Add("Error", run.Error)
            .Add("Started", TextFormat.Timestamp(run.StartedAt))
            .Add("Ended", TextFormat.Timestamp(run.EndedAt))
            .Add("Duration", DurationText(run))
            .Add("Budgets", run.Concurrency.ToText())
            .Add("Targets", run.Summary())
            .Add("Trace ID", run.TraceId)
            .WriteTo(writer, color);
        writer.WriteLine();
        PolicyTargetView.WriteTable(run.Targets, writer, color, now: null);
    }

    /// <summary>"8: 5 succeeded, 1 failed, 2 skipped": the count, then each status present, in lifecycle order.</summary>
    public string Summary()
    {
        if (Targets.Count == 0)
        {
            return "none";
        }

        var counts = Targets.GroupBy(t => t.Status).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        IEnumerable<string> parts = PolicyTargetView.StatusOrder
            .Concat(counts.Keys.Except(PolicyTargetView.StatusOrder).Order(StringComparer.Ordinal))
            .Where(counts.ContainsKey)
            .Select(status => $"{counts[status].ToString(CultureInfo.InvariantCulture)} {status}");
        return $"{Targets.Count.ToString(CultureInfo.InvariantCulture)}: {string.Join(", ", parts)}";
    }

    [JsonIgnore]
    public bool HasEnded => State is "completed" or "partial" or "failed";

    /// <summary>Ended minus started; empty while the run goes on.</summary>
    private static string? DurationText(PolicyRunView run) =>
        run is { StartedAt: { } started, EndedAt: { } ended } ? TextFormat.Duration(ended - started) : null;

    private static string? NullIfEmpty(string value) => value.Length == 0 ? null : value;
}

/// <summary>One VM of a policy run.</summary>
internal sealed record PolicyTargetView(
    string Host,
    string Vm,
    string Status,
    string? BackupRun,
    string? Checkpoint,
    string? Reason,
    DateTime? AdmittedAt,
    DateTime? ReleasedAt,
    int Attempts)
{
    /// <summary>Statuses in the order a target goes through them, for summaries.</summary>
    public static readonly string[] StatusOrder = ["succeeded", "failed", "skipped", "running", "pending"];

    [JsonIgnore]
    public string Key => $"{Host}/{Vm}";

    public static PolicyTargetView From(PolicyTarget target) => new(
        target.Host,
        target.Vm,
        EnumNames.Of(target.Status),
        target.BackupRun.Length == 0 ? null : target.BackupRun,
        target.Checkpoint.Length == 0 ? null : target.Checkpoint,
        target.Reason.Length == 0 ? null : target.Reason,
        Timestamps.ToUtc(target.AdmittedAt),
        Timestamps.ToUtc(target.ReleasedAt),
        target.Attempts);

    /// <summary>
    /// VM, status, attempts, how long it held its slot (to <paramref name="now"/> while it still does; unknown
    /// without a clock), what it made (the backup run or the checkpoint) and why it waits, failed or was skipped.
    /// </summary>
    public static void WriteTable(IReadOnlyList<PolicyTargetView> targets, TextWriter writer, bool color, DateTime? now)
    {
        if (targets.Count == 0)
        {
            writer.WriteLine("No targets.");
            return;
        }

        var table = new TableWriter(
            new TableColumn("VM"),
            new TableColumn("STATUS"),
            new TableColumn("ATTEMPTS", AlignRight: true),
            new TableColumn("TIME", AlignRight: true),
            new TableColumn("RESULT"),
            new TableColumn("REASON"));
        foreach (PolicyTargetView target in targets)
        {
            table.AddRow(
                target.Key,
                target.Status,
                target.Attempts.ToString(CultureInfo.InvariantCulture),
                target.Held(now) is { } held ? TextFormat.Duration(held) : null,
                target.BackupRun ?? target.Checkpoint,
                target.Reason);
        }

        table.WriteTo(writer, color);
    }

    /// <summary>Admitted to released, or to <paramref name="now"/> while it holds its slot; null before admission.</summary>
    public TimeSpan? Held(DateTime? now) => AdmittedAt is { } admitted && (ReleasedAt ?? now) is { } end ? end - admitted : null;
}

/// <summary>Admission budgets: VMs at once per host and over the fleet.</summary>
internal sealed record ConcurrencyView(int PerHost, int Fleet)
{
    public static ConcurrencyView From(PolicyConcurrency? concurrency) =>
        new(concurrency?.PerHost ?? 0, concurrency?.Fleet ?? 0);

    public string ToText() =>
        $"{PerHost.ToString(CultureInfo.InvariantCulture)} per host, {Fleet.ToString(CultureInfo.InvariantCulture)} fleet-wide";
}
