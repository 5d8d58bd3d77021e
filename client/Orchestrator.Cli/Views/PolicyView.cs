using System.Globalization;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Infrastructure;
using Orchestrator.Cli.Output;

namespace Orchestrator.Cli.Views;

/// <summary>
/// A stored policy as <c>policy show</c> and <c>policy list</c> print it. The JSON shape is documented in README.md;
/// its <c>spec</c> has the keys of a policy file, so <c>policy show NAME --format json | jq .spec</c> is a policy
/// file that <c>policy apply -f</c> takes back.
/// </summary>
internal sealed record PolicyView(
    string Name,
    int Version,
    PolicySpecView Spec,
    DateTime? CreatedAt,
    DateTime? UpdatedAt,
    DateTime? NextRunAt,
    PolicyRunView? LastRun,
    IReadOnlyList<string> PendingRetries)
{
    public static PolicyView From(Policy policy)
    {
        PolicySpecView spec = PolicySpecView.From(policy.Spec ?? new PolicySpec());
        return new PolicyView(
            spec.Name,
            policy.Version,
            spec,
            Timestamps.ToUtc(policy.CreatedAt),
            Timestamps.ToUtc(policy.UpdatedAt),
            Timestamps.ToUtc(policy.NextRunAt),
            policy.LastRun is { } run ? PolicyRunView.From(run) : null,
            [.. policy.PendingRetries.Order(StringComparer.Ordinal)]);
    }

    /// <summary>Sorted by name, so output is stable whatever order the server answers in.</summary>
    public static IReadOnlyList<PolicyView> FromList(IEnumerable<Policy> policies) =>
        [.. policies.Select(From).OrderBy(p => p.Name, StringComparer.Ordinal)];

    public static void WriteTable(IReadOnlyList<PolicyView> policies, TextWriter writer, bool color)
    {
        if (policies.Count == 0)
        {
            writer.WriteLine("No policies.");
            return;
        }

        var table = new TableWriter(
            new TableColumn("NAME"),
            new TableColumn("KIND"),
            new TableColumn("VERSION", AlignRight: true),
            new TableColumn("SCHEDULE"),
            new TableColumn("NEXT RUN"),
            new TableColumn("LAST RUN"),
            new TableColumn("RPO", AlignRight: true));
        foreach (PolicyView policy in policies)
        {
            table.AddRow(
                policy.Name,
                policy.Spec.Kind,
                policy.Version.ToString(CultureInfo.InvariantCulture),
                policy.Spec.ScheduleText(),
                TextFormat.Timestamp(policy.NextRunAt),
                LastRunText(policy.LastRun),
                policy.Spec.RpoText());
        }

        table.WriteTo(writer, color);
    }

    public static void WriteDetails(PolicyView policy, TextWriter writer, bool color)
    {
        PolicySpecView spec = policy.Spec;
        new PropertyListWriter()
            .Add("Name", policy.Name)
            .Add("Kind", spec.Kind)
            .Add("Version", policy.Version.ToString(CultureInfo.InvariantCulture))
            .Add("Description", spec.Description)
            .Add("Hosts", Globs(spec.Selector.Hosts))
            .Add("VMs", Globs(spec.Selector.Vms))
            .Add("Labels", string.Join(",", spec.Selector.Labels.Select(pair => $"{pair.Key}={pair.Value}")))
            .Add("Schedule", spec.ScheduleText())
            .Add("Next run", TextFormat.Timestamp(policy.NextRunAt))
            .Add("Retention", spec.Retention.ToText())
            .Add("Target", spec.Target)
            .Add("Quiesce", spec.Quiesce)
            .Add("Verify", TextFormat.YesNo(spec.Verify))
            .Add("Bandwidth", spec.Bandwidth > 0 ? $"{TextFormat.Bytes(spec.Bandwidth)}/s" : "unlimited")
            .Add("Budgets", spec.Concurrency.ToText())
            .Add("RPO", spec.RpoText())
            .AddIf("Test restore", spec.TestRestore?.ToText())
            .AddIf("Level", spec.Level == "auto" ? "auto (incremental)" : null)
            .AddIf("Full every", spec.FullEvery)
            .Add("Created", TextFormat.Timestamp(policy.CreatedAt))
            .Add("Updated", TextFormat.Timestamp(policy.UpdatedAt))
            .Add("Last run", LastRunText(policy.LastRun))
            .Add("Pending retries", policy.PendingRetries.Count == 0 ? null : string.Join(", ", policy.PendingRetries))
            .WriteTo(writer, color);
    }

    /// <summary>"p-20261126-020000-abc123 partial (8: 6 succeeded, 2 skipped)".</summary>
    private static string? LastRunText(PolicyRunView? run) => run is null ? null : $"{run.RunId} {run.State} ({run.Summary()})";

    private static string Globs(IReadOnlyList<string> globs) => globs.Count == 0 ? "all" : string.Join(", ", globs);
}

/// <summary>A policy's spec with the keys of a policy file: snake_case, bandwidth in bytes per second, rpo in seconds.</summary>
internal sealed record PolicySpecView(
    string Name,
    string Kind,
    string? Description,
    PolicySelectorView Selector,
    PolicyScheduleView? Schedule,
    RetentionView Retention,
    string? Target,
    string Quiesce,
    bool Verify,
    long Bandwidth,
    ConcurrencyView Concurrency,
    double Rpo,
    TestRestorePolicyView? TestRestore = null,
    string Level = "full",
    string? FullEvery = null)
{
    public static PolicySpecView From(PolicySpec spec) => new(
        spec.Name,
        EnumNames.Of(spec.Kind),
        spec.Description.Length == 0 ? null : spec.Description,
        PolicySelectorView.From(spec.Selector ?? new PolicySelector()),
        spec.Schedule is { } schedule ? new PolicyScheduleView(schedule.Cron, schedule.TimeZone.Length > 0 ? schedule.TimeZone : "UTC") : null,
        spec.Retention is { } r ? new RetentionView(r.KeepLast, r.Hourly, r.Daily, r.Weekly, r.Monthly) : new RetentionView(0, 0, 0, 0, 0),
        spec.Target.Length == 0 ? null : spec.Target,
        EnumNames.Of(spec.Quiesce),
        spec.Verify,
        spec.BandwidthBytesPerSecond,
        ConcurrencyView.From(spec.Concurrency),
        spec.Rpo is { } rpo ? rpo.ToTimeSpan().TotalSeconds : 0,
        TestRestorePolicyView.From(spec.TestRestore),
        spec.Level.Length == 0 ? "full" : spec.Level,
        spec.FullEveryRuns > 0 ? $"{spec.FullEveryRuns} runs" : spec.FullEvery is { } fullEvery ? DurationText.Format(fullEvery.ToTimeSpan()) : null);

    /// <summary>"0 2 * * * (Europe/Berlin)", or "on demand" without a schedule.</summary>
    public string ScheduleText() => Schedule is { } s ? $"{s.Cron} ({s.TimeZone})" : "on demand";

    /// <summary>"26h", or empty (shown "-") when not tracked.</summary>
    public string? RpoText() => Rpo > 0 ? DurationText.Format(TimeSpan.FromSeconds(Rpo)) : null;
}

internal sealed record PolicySelectorView(IReadOnlyList<string> Hosts, IReadOnlyList<string> Vms, IReadOnlyDictionary<string, string> Labels)
{
    public static PolicySelectorView From(PolicySelector selector) =>
        new([.. selector.Hosts], [.. selector.Vms], new SortedDictionary<string, string>(selector.Labels, StringComparer.Ordinal));
}

internal sealed record PolicyScheduleView(string Cron, string TimeZone);

/// <summary><c>policy apply</c>: what the server did (created, updated or unchanged) and the policy now.</summary>
internal sealed record PolicyApplyView(string Name, string Result, int Version, PolicyView Policy)
{
    public static PolicyApplyView From(ApplyPolicyResponse response)
    {
        PolicyView policy = PolicyView.From(response.Policy ?? new Policy());
        string result = response.Created ? "created" : response.Changed ? "updated" : "unchanged";
        return new PolicyApplyView(policy.Name, result, policy.Version, policy);
    }

    public static void WriteText(PolicyApplyView view, TextWriter writer, bool color)
    {
        string version = view.Version.ToString(CultureInfo.InvariantCulture);
        writer.WriteLine(view.Result switch
        {
            "created" => $"Created policy {view.Name} (version {version}).",
            "updated" => $"Updated policy {view.Name} to version {version}.",
            _ => $"Policy {view.Name} unchanged (version {version}).",
        });
        if (view.Policy.NextRunAt is { } next)
        {
            writer.WriteLine($"Next run at {TextFormat.Timestamp(next)}.");
        }
    }
}

/// <summary><c>policy delete</c>: whether there was such a policy.</summary>
internal sealed record PolicyDeletedView(string Name, bool Deleted)
{
    public static void WriteText(PolicyDeletedView view, TextWriter writer, bool color) =>
        writer.WriteLine(view.Deleted
            ? $"Deleted policy {view.Name}; its backups and checkpoints stay."
            : $"There is no policy {view.Name}; nothing deleted.");
}

/// <summary>A policy's test_restore: every_runs or every (seconds), probe, rto and timeout in seconds (0: unset).</summary>
internal sealed record TestRestorePolicyView(int EveryRuns, double Every, string Probe, double Rto, double Timeout)
{
    public static TestRestorePolicyView? From(PolicyTestRestore? test) => test is null ? null : new(
        test.EveryRuns,
        test.Every is { } every ? every.ToTimeSpan().TotalSeconds : 0,
        test.Probe.Length == 0 ? "agent" : test.Probe,
        test.Rto is { } rto ? rto.ToTimeSpan().TotalSeconds : 0,
        test.Timeout is { } timeout ? timeout.ToTimeSpan().TotalSeconds : 0);

    /// <summary>"every 7 runs, probe agent, rto 2m".</summary>
    public string ToText() =>
        (EveryRuns > 0 ? $"every {EveryRuns} runs" : $"every {DurationText.Format(TimeSpan.FromSeconds(Every))}")
        + $", probe {Probe}"
        + (Rto > 0 ? $", rto {DurationText.Format(TimeSpan.FromSeconds(Rto))}" : "");
}
