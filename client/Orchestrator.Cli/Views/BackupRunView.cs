using System.Globalization;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Output;

namespace Orchestrator.Cli.Views;

/// <summary>
/// A backup run as the <c>backup</c> commands print it. The JSON shape is documented in README.md.
/// </summary>
internal sealed record BackupRunView(
    string Key,
    string Host,
    string Vm,
    string Step,
    bool RollingBack,
    string? Error,
    DateTime? StartedAt,
    DateTime? EndedAt,
    string BackupSetPath,
    string QuiesceOutcome,
    double FreezeMs,
    string? TraceId,
    string? Policy,
    int PolicyVersion,
    string? PolicyRun,
    IReadOnlyList<BackupDiskView> Disks,
    IReadOnlyList<BackupStepView> Steps,
    TestRestoreView? LastTest = null,
    string Method = "live",
    string? Level = null,
    string? Parent = null,
    string? LevelReason = null)
{
    /// <summary>Disks and steps keep the server's order (the domain's disks; steps as they happened).</summary>
    public static BackupRunView From(BackupRun run) => new(
        run.Key,
        run.Host,
        run.Vm,
        EnumNames.Of(run.Step),
        run.RollingBack,
        NullIfEmpty(run.Error),
        Timestamps.ToUtc(run.StartedAt),
        Timestamps.ToUtc(run.EndedAt),
        run.BackupSetPath,
        run.QuiesceOutcome,
        run.FreezeMs,
        NullIfEmpty(run.TraceId),
        NullIfEmpty(run.Policy),
        run.PolicyVersion,
        NullIfEmpty(run.PolicyRun),
        [.. run.Disks.Select(BackupDiskView.From)],
        [.. run.Steps.Select(BackupStepView.From)],
        TestRestoreView.From(run.LastTest),
        run.Method is { Length: > 0 } method ? method : "live",
        NullIfEmpty(run.Level),
        NullIfEmpty(run.Parent),
        NullIfEmpty(run.LevelReason));

    /// <summary>Runs newest first, then by key, so output is stable whatever order the server answers in.</summary>
    public static IReadOnlyList<BackupRunView> FromList(IEnumerable<BackupRun> runs) =>
        [.. runs.Select(From).OrderByDescending(r => r.StartedAt).ThenBy(r => r.Key, StringComparer.Ordinal)];

    public static void WriteTable(IReadOnlyList<BackupRunView> runs, TextWriter writer, bool color)
    {
        if (runs.Count == 0)
        {
            writer.WriteLine("No backups.");
            return;
        }

        var table = new TableWriter(
            new TableColumn("KEY"),
            new TableColumn("STEP"),
            new TableColumn("STARTED"),
            new TableColumn("DURATION", AlignRight: true),
            new TableColumn("BYTES", AlignRight: true),
            new TableColumn("ERROR"));
        foreach (BackupRunView run in runs)
        {
            table.AddRow(run.Key, StepText(run), TextFormat.Timestamp(run.StartedAt), DurationText(run), BytesText(run), run.Error);
        }

        table.WriteTo(writer, color);
    }

    public static void WriteDetails(BackupRunView run, TextWriter writer, bool color)
    {
        new PropertyListWriter()
            .Add("Key", run.Key)
            .Add("Host", run.Host)
            .Add("VM", run.Vm)
            .Add("Step", StepText(run))
            .Add("Error", run.Error)
            .Add("Started", TextFormat.Timestamp(run.StartedAt))
            .Add("Ended", TextFormat.Timestamp(run.EndedAt))
            .Add("Duration", DurationText(run))
            .Add("Bytes", BytesText(run))
            .Add("Backup set", run.BackupSetPath)
            .Add("Method", run.Method)
            .AddIf("Level", run.Level)
            .AddIf("Parent", run.Parent)
            .AddIf("Reason", run.LevelReason)
            .Add("Quiesce", run.QuiesceOutcome)
            .Add("Freeze", run.FreezeMs > 0 ? $"{run.FreezeMs.ToString("0.#", CultureInfo.InvariantCulture)} ms" : null)
            .Add("Policy", run.Policy is null ? null : PolicyText(run))
            .Add("Trace ID", run.TraceId)
            .AddIf("Last test", run.LastTest is { } test
                ? $"{test.Outcome} at {TextFormat.Timestamp(test.EndedAt ?? test.StartedAt)}: {test.Reason}"
                : null)
            .WriteTo(writer, color);
        writer.WriteLine();
        if (run.Disks.Count == 0)
        {
            writer.WriteLine("No disks.");
        }
        else
        {
            var disks = new TableWriter(
                new TableColumn("DISK"),
                new TableColumn("FORMAT"),
                new TableColumn("COPIED", AlignRight: true),
                new TableColumn("TOTAL", AlignRight: true),
                new TableColumn("DONE", AlignRight: true),
                new TableColumn("COMMITTED"),
                new TableColumn("VERIFIED"),
                new TableColumn("SHA256"),
                new TableColumn("BACKUP"));
            foreach (BackupDiskView disk in run.Disks)
            {
                disks.AddRow(
                    disk.Target,
                    disk.Format,
                    TextFormat.Bytes(disk.BytesCopied),
                    TextFormat.Bytes(disk.BytesTotal),
                    TextFormat.Percent(disk.BytesCopied, disk.BytesTotal),
                    TextFormat.YesNo(disk.Committed),
                    TextFormat.YesNo(disk.Verified),
                    ShortSha256(disk.Sha256),
                    disk.BackupPath);
            }

            disks.WriteTo(writer, color);
        }

        writer.WriteLine();
        if (run.Steps.Count == 0)
        {
            writer.WriteLine("No steps.");
            return;
        }

        var steps = new TableWriter(new TableColumn("STEP"), new TableColumn("AT"), new TableColumn("NOTE"));
        foreach (BackupStepView step in run.Steps)
        {
            steps.AddRow(step.Step, TextFormat.Timestamp(step.At), step.Note);
        }

        steps.WriteTo(writer, color);
    }

    /// <summary>"nightly (version 3)", with ", run p-..." when a policy run started it.</summary>
    private static string PolicyText(BackupRunView run) =>
        $"{run.Policy} (version {run.PolicyVersion.ToString(CultureInfo.InvariantCulture)}{(run.PolicyRun is { } policyRun ? $", run {policyRun}" : "")})";

    /// <summary>The step for people: "committing (rolling back)" while a failed run undoes its overlays.</summary>
    internal static string StepText(BackupRunView run) => run.RollingBack ? $"{run.Step} (rolling back)" : run.Step;

    /// <summary>Bytes copied over all disks: "20 GiB" once all are copied, else "7.5 GiB/20 GiB".</summary>
    internal static string BytesText(BackupRunView run)
    {
        long copied = run.Disks.Sum(d => d.BytesCopied);
        long total = run.Disks.Sum(d => d.BytesTotal);
        return copied == total ? TextFormat.Bytes(total) : $"{TextFormat.Bytes(copied)}/{TextFormat.Bytes(total)}";
    }

    /// <summary>Ended minus started; empty while the run goes on (the live view counts elapsed time).</summary>
    private static string? DurationText(BackupRunView run) =>
        run is { StartedAt: { } started, EndedAt: { } ended } ? TextFormat.Duration(ended - started) : null;

    /// <summary>The first 12 hex digits, enough to compare by eye; JSON has the whole digest.</summary>
    private static string? ShortSha256(string? sha256) => sha256 is { Length: > 12 } ? sha256[..12] : sha256;

    private static string? NullIfEmpty(string value) => value.Length == 0 ? null : value;
}
