using System.Globalization;
using Orchestrator.Cli.Output;

namespace Orchestrator.Cli.Views;

/// <summary>
/// How a followed policy run shows as it goes: a frame redrawn in place on a terminal (a row per target), or one
/// line per change (a target's status, the run's state) for logs and stderr.
/// </summary>
internal static class PolicyRunProgressView
{
    /// <summary>Target rows a frame shows at most; beyond that the busiest come first and the rest are counted.</summary>
    public const int MaxRows = 30;

    /// <summary>Which targets a crowded frame shows first.</summary>
    private static readonly string[] RowPriority = ["running", "failed", "pending", "skipped", "succeeded"];

    /// <summary>
    /// The live frame: a heading (policy, run, state, elapsed time), the targets' summary and budgets, then a row per
    /// target, then the run's error once it has one.
    /// <code>
    /// nightly-web  p-20261126-020000-abc123  running  elapsed 0:01:23
    ///   targets 3: 1 succeeded, 1 running, 1 pending  (budgets 1 per host, 4 fleet-wide)
    ///   VM            STATUS     ATTEMPTS     TIME  RESULT  REASON
    ///   kvm-01/web-1  succeeded         1  0:00:41  kvm-01/web-1/b-...  -
    /// </code>
    /// </summary>
    public static IReadOnlyList<string> Frame(PolicyRunView run, DateTime now, bool color)
    {
        var lines = new List<string>
        {
            $"{run.Policy}  {run.RunId}  {Ansi.Bold(run.State, color)}  elapsed {TextFormat.Duration(Elapsed(run, now))}",
            $"  targets {run.Summary()}  (budgets {run.Concurrency.ToText()})",
        };
        IReadOnlyList<PolicyTargetView> shown = run.Targets;
        if (run.Targets.Count > MaxRows)
        {
            shown = [.. run.Targets.OrderBy(t => Priority(t.Status)).Take(MaxRows)
                .OrderBy(t => t.Host, StringComparer.Ordinal).ThenBy(t => t.Vm, StringComparer.Ordinal)];
        }

        var table = new StringWriter();
        PolicyTargetView.WriteTable(shown, table, color, now);
        lines.AddRange(table.ToString().Split(table.NewLine, StringSplitOptions.RemoveEmptyEntries).Select(line => "  " + line));
        if (run.Targets.Count > shown.Count)
        {
            lines.Add($"  ... and {(run.Targets.Count - shown.Count).ToString(CultureInfo.InvariantCulture)} more "
                + $"(policy runs {run.Policy} {run.RunId} lists them all)");
        }

        if (run.Error is not null)
        {
            lines.Add($"  error: {run.Error}");
        }

        return lines;
    }

    /// <summary>
    /// What changed from <paramref name="previous"/> (null: nothing seen yet) to <paramref name="current"/>, one line
    /// each: every target whose status changed (or that is new and not pending), then the run's state when it changed.
    /// <code>
    /// 0:00:41  kvm-01/web-1  succeeded  kvm-01/web-1/b-20261126-020001-0a0b0c
    /// 0:00:41  kvm-03/web-3  skipped  host kvm-03 unavailable
    /// 0:01:23  run partial: 3: 2 succeeded, 1 skipped
    /// </code>
    /// </summary>
    public static IEnumerable<string> Changes(PolicyRunView? previous, PolicyRunView current, DateTime now)
    {
        string elapsed = TextFormat.Duration(Elapsed(current, now));
        var before = previous?.Targets.ToDictionary(t => t.Key, t => t.Status, StringComparer.Ordinal)
            ?? new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (PolicyTargetView target in current.Targets)
        {
            bool changed = before.TryGetValue(target.Key, out string? status) ? status != target.Status : target.Status != "pending";
            if (changed)
            {
                string? detail = target.Status == "succeeded" ? target.BackupRun ?? target.Checkpoint : target.Reason;
                yield return detail is null ? $"{elapsed}  {target.Key}  {target.Status}" : $"{elapsed}  {target.Key}  {target.Status}  {detail}";
            }
        }

        if (previous is null || previous.State != current.State)
        {
            string line = $"{elapsed}  run {current.State}: {current.Summary()}";
            yield return current.Error is null ? line : $"{line}  error: {current.Error}";
        }
    }

    /// <summary>From the start to the end, or to <paramref name="now"/> while the run goes on.</summary>
    public static TimeSpan Elapsed(PolicyRunView run, DateTime now) =>
        run.StartedAt is { } started ? (run.EndedAt ?? now) - started : TimeSpan.Zero;

    private static int Priority(string status)
    {
        int index = Array.IndexOf(RowPriority, status);
        return index < 0 ? RowPriority.Length : index;
    }
}
