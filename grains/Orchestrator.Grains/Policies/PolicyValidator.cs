using System.Text.RegularExpressions;
using Cronos;
using Orchestrator.Grains.Backups;
using Orchestrator.Grains.Checkpoints;

namespace Orchestrator.Grains.Policies;

/// <summary>A policy spec that passed validation, with its parsed schedule.</summary>
public sealed record ValidatedPolicy(PolicySpec Spec, CronExpression? Cron, TimeZoneInfo Zone);

/// <summary>
/// Checks a submitted policy completely before anything is stored. Errors are InvalidArgument naming the field by
/// its path in the policy file (<c>schedule.cron</c>, <c>concurrency.per_host</c>, <c>selector.vms[1]</c>, ...).
/// </summary>
public static partial class PolicyValidator
{
    public const int MaxPerHost = 100_000;
    public const int MaxFleet = 1_000_000;
    public static readonly TimeSpan MaxRpo = TimeSpan.FromDays(366);
    public const int MaxTestEveryRuns = 1000;
    public static readonly TimeSpan MinTestEvery = TimeSpan.FromMinutes(1);
    public static readonly TimeSpan MaxTestRto = TimeSpan.FromDays(1);

    /// <summary>test_restore: live backups only; exactly one of every runs / every duration; a valid probe; bounded RTO and timeout.</summary>
    public static void ValidateTestRestore(PolicyKind kind, TestRestoreSpec test)
    {
        ArgumentNullException.ThrowIfNull(test);
        if (kind != PolicyKind.LiveBackup)
        {
            throw OrchestratorException.InvalidArgument("test_restore", "only live-backup policies make backup sets to test-restore");
        }

        if ((test.EveryRuns > 0) == (test.Every is not null))
        {
            throw OrchestratorException.InvalidArgument("test_restore.every", "give exactly one: a number of runs (e.g. '7 runs') or a duration (e.g. '7d')");
        }

        if (test.EveryRuns is < 0 or > MaxTestEveryRuns)
        {
            throw OrchestratorException.InvalidArgument("test_restore.every", $"must be between 1 and {MaxTestEveryRuns} runs, not {test.EveryRuns}");
        }

        if (test.Every is { } every && (every < MinTestEvery || every > MaxRpo))
        {
            throw OrchestratorException.InvalidArgument("test_restore.every", $"must be between {MinTestEvery.TotalMinutes:0} minute and {MaxRpo.TotalDays:0} days, not {every}");
        }

        if (test.Probe is null)
        {
            throw OrchestratorException.InvalidArgument("test_restore.probe", "is required (agent, console:REGEX or command:CMD)");
        }

        test.Probe.Validate("test_restore.probe");
        if (test.Rto is { } rto && (rto <= TimeSpan.Zero || rto > MaxTestRto))
        {
            throw OrchestratorException.InvalidArgument("test_restore.rto", $"must be above 0 and at most {MaxTestRto.TotalHours:0} hours, not {rto}");
        }

        if (test.Timeout is { } timeout && (timeout < TestRestoreRequest.MinTimeout || timeout > TestRestoreRequest.MaxTimeout))
        {
            throw OrchestratorException.InvalidArgument("test_restore.timeout", $"must be between {TestRestoreRequest.MinTimeout.TotalSeconds:0} s and {TestRestoreRequest.MaxTimeout.TotalHours:0} h, not {timeout}");
        }
    }

    /// <summary>Most host patterns, VM patterns or labels one selector holds.</summary>
    public const int MaxSelectorEntries = 256;

    /// <summary>Highest copy bandwidth limit: 1 TiB/s (0 is unlimited).</summary>
    public const long MaxBandwidth = 1L << 40;

    private static readonly string[] Placeholders = ["{host}", "{vm}", "{policy}"];

    public static ValidatedPolicy Validate(PolicySpec spec, BackupOptions backup, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(backup);
        PolicyNames.Validate(spec.Name);
        if (!Enum.IsDefined(spec.Kind))
        {
            throw OrchestratorException.InvalidArgument("kind", $"'{spec.Kind}' is not a policy kind (live-backup or checkpoint)");
        }

        if (spec.Description.Length > 500 || spec.Description.Any(c => char.IsControl(c) && c != '\n'))
        {
            throw OrchestratorException.InvalidArgument("description", "at most 500 characters, no control characters");
        }

        var selector = ValidateSelector(spec.Selector);
        CronExpression? cron = null;
        var zone = TimeZoneInfo.Utc;
        PolicySchedule? schedule = null;
        if (spec.Schedule is { } s)
        {
            cron = CheckpointSchedulePlanner.ParseCron(s.Cron);
            zone = CheckpointSchedulePlanner.ParseTimeZone(s.TimeZone);
            if (cron.GetNextOccurrence(now.UtcDateTime, zone) is null)
            {
                throw OrchestratorException.InvalidArgument("schedule.cron", $"{OrchestratorException.Quote(s.Cron)} never fires");
            }

            schedule = new PolicySchedule(s.Cron.Trim(), zone.Id);
        }

        var what = spec.Kind == PolicyKind.LiveBackup ? "backup set" : "policy checkpoint";
        var storage = spec.Kind == PolicyKind.LiveBackup ? "the backup target" : "the qcow2 images";
        CheckpointSchedulePlanner.ValidateRetention(spec.Retention, what, storage);
        if (spec.Kind == PolicyKind.LiveBackup && spec.Retention.Hourly > 0)
        {
            throw OrchestratorException.InvalidArgument("retention.hourly", "hourly buckets apply to checkpoint policies; live-backup sets are kept by keep_last, daily, weekly and monthly");
        }

        var target = spec.Kind switch
        {
            PolicyKind.LiveBackup => ValidateTarget(spec.Target, spec.Name, backup),
            _ when !string.IsNullOrEmpty(spec.Target) => throw OrchestratorException.InvalidArgument("target", "only live-backup policies have a target; checkpoints live inside the VM's qcow2 disks"),
            _ => null,
        };

        if (!Enum.IsDefined(spec.Quiesce))
        {
            throw OrchestratorException.InvalidArgument("quiesce", $"'{spec.Quiesce}' is not a quiesce mode (off, try or required)");
        }

        if (spec.Kind == PolicyKind.Checkpoint && spec.Quiesce != QuiesceMode.Off)
        {
            throw OrchestratorException.InvalidArgument("quiesce", "checkpoints save memory with the disks and are consistent without a freeze; use off");
        }

        if (spec.BandwidthBytesPerSecond is < 0 or > MaxBandwidth)
        {
            throw OrchestratorException.InvalidArgument("bandwidth", $"must be between 0 (unlimited) and {MaxBandwidth} bytes per second (1 TiB/s), not {spec.BandwidthBytesPerSecond}");
        }

        var concurrency = spec.Concurrency ?? throw OrchestratorException.InvalidArgument("concurrency", "is required");
        if (concurrency.PerHost is < 1 or > MaxPerHost)
        {
            throw OrchestratorException.InvalidArgument("concurrency.per_host", $"must be between 1 and {MaxPerHost}, not {concurrency.PerHost}");
        }

        if (concurrency.Fleet is < 1 or > MaxFleet)
        {
            throw OrchestratorException.InvalidArgument("concurrency.fleet", $"must be between 1 and {MaxFleet}, not {concurrency.Fleet}");
        }

        if (spec.Rpo < TimeSpan.Zero || spec.Rpo > MaxRpo)
        {
            throw OrchestratorException.InvalidArgument("rpo", $"must be between 0 (not tracked) and {MaxRpo.TotalDays:0} days, not {spec.Rpo}");
        }

        if (spec.TestRestore is { } test)
        {
            ValidateTestRestore(spec.Kind, test);
        }

        ValidateLevel(spec);

        var normalized = spec with
        {
            Description = spec.Description.Trim(),
            Selector = selector,
            Schedule = schedule,
            Target = target,
            Quiesce = spec.Kind == PolicyKind.Checkpoint ? QuiesceMode.Off : spec.Quiesce,
            Verify = spec.Kind == PolicyKind.LiveBackup && spec.Verify,
            BandwidthBytesPerSecond = spec.Kind == PolicyKind.LiveBackup ? spec.BandwidthBytesPerSecond : 0,
        };
        return new ValidatedPolicy(normalized, cron, zone);
    }

    /// <summary>level (full | auto) and full_every (a count of runs or a duration, level auto only).</summary>
    private static void ValidateLevel(PolicySpec spec)
    {
        if (!Enum.IsDefined(spec.Level))
        {
            throw OrchestratorException.InvalidArgument("level", $"'{spec.Level}' is not a level (full or auto)");
        }

        if (spec.Level == BackupLevel.Auto && spec.Kind != PolicyKind.LiveBackup)
        {
            throw OrchestratorException.InvalidArgument("level", "auto (incremental backups) applies to live-backup policies only");
        }

        if (spec.Level != BackupLevel.Auto && (spec.FullEveryRuns != 0 || spec.FullEvery is not null))
        {
            throw OrchestratorException.InvalidArgument("full_every", "applies only with level auto (a full policy takes a full every run)");
        }

        if (spec.FullEveryRuns != 0 && spec.FullEvery is not null)
        {
            throw OrchestratorException.InvalidArgument("full_every", "give a count of runs or a duration, not both");
        }

        if (spec.FullEveryRuns is < 0 or > Backups.BackupRequestRules.MaxFullEveryRuns)
        {
            throw OrchestratorException.InvalidArgument("full_every", $"a count of runs must be between 1 and {Backups.BackupRequestRules.MaxFullEveryRuns}, not {spec.FullEveryRuns}");
        }

        if (spec.FullEvery is { } age && (age < TimeSpan.FromMinutes(1) || age > Backups.BackupRequestRules.MaxFullEveryAge))
        {
            throw OrchestratorException.InvalidArgument("full_every", $"a duration must be between 1 minute and {Backups.BackupRequestRules.MaxFullEveryAge.TotalDays:F0} days, not {age}");
        }
    }

    /// <summary>The target directory of one VM: the template with its placeholders filled in, confined to the roots.</summary>
    public static string RenderTarget(string template, string policy, string host, string vm) =>
        template.Replace("{host}", host, StringComparison.Ordinal)
            .Replace("{vm}", vm, StringComparison.Ordinal)
            .Replace("{policy}", policy, StringComparison.Ordinal);

    private static PolicySelector ValidateSelector(PolicySelector? selector)
    {
        if (selector is null)
        {
            return new PolicySelector();
        }

        if (selector.Hosts.Count > MaxSelectorEntries || selector.Vms.Count > MaxSelectorEntries || selector.Labels.Count > MaxSelectorEntries)
        {
            var field = selector.Hosts.Count > MaxSelectorEntries ? "selector.hosts" : selector.Vms.Count > MaxSelectorEntries ? "selector.vms" : "selector.labels";
            throw OrchestratorException.InvalidArgument(field, $"at most {MaxSelectorEntries} entries");
        }

        for (var i = 0; i < selector.Hosts.Count; i++)
        {
            var pattern = selector.Hosts[i];
            if (string.IsNullOrEmpty(pattern) || pattern.Length > 63 || !HostPattern().IsMatch(pattern))
            {
                throw OrchestratorException.InvalidArgument($"selector.hosts[{i}]", $"{OrchestratorException.Quote(pattern)} is not a host pattern (1-63 letters, digits, '-', '_', '.', with * and ? as wildcards)");
            }
        }

        for (var i = 0; i < selector.Vms.Count; i++)
        {
            var pattern = selector.Vms[i];
            if (string.IsNullOrEmpty(pattern) || pattern.Length > 200 || pattern.Contains('/', StringComparison.Ordinal) || pattern.Any(char.IsControl))
            {
                throw OrchestratorException.InvalidArgument($"selector.vms[{i}]", $"{OrchestratorException.Quote(pattern)} is not a VM name pattern (1-200 characters, no '/', no control characters; * and ? are wildcards)");
            }
        }

        foreach (var (key, value) in selector.Labels)
        {
            if (string.IsNullOrEmpty(key) || key.Length > 63 || !LabelKeyPattern().IsMatch(key))
            {
                throw OrchestratorException.InvalidArgument(LabelField(key), $"{OrchestratorException.Quote(key)} is not a label key (1-63 letters, digits, '.', '_', '-', '/')");
            }

            if (value is null || value.Length > 256 || value.Any(char.IsControl))
            {
                throw OrchestratorException.InvalidArgument(LabelField(key), "a label value is 0-256 characters without control characters ('*' matches any value)");
            }
        }

        return new PolicySelector
        {
            Hosts = [.. selector.Hosts.Distinct(StringComparer.Ordinal)],
            Vms = [.. selector.Vms.Distinct(StringComparer.Ordinal)],
            Labels = new SortedDictionary<string, string>(selector.Labels.ToDictionary(), StringComparer.Ordinal),
        };
    }

    private static string? ValidateTarget(string? template, string policy, BackupOptions backup)
    {
        if (string.IsNullOrWhiteSpace(template))
        {
            // Each host's default target; checked there at run time (hosts may differ).
            return null;
        }

        var text = template.Trim();
        foreach (Match m in PlaceholderPattern().Matches(text))
        {
            if (!Placeholders.Contains(m.Value, StringComparer.Ordinal))
            {
                throw OrchestratorException.InvalidArgument("target", $"unknown placeholder {OrchestratorException.Quote(m.Value)} in {OrchestratorException.Quote(text)}; use {{host}}, {{vm}} or {{policy}}");
            }
        }

        if (text.Contains('{', StringComparison.Ordinal) && PlaceholderPattern().Replace(text, "").Contains('{', StringComparison.Ordinal))
        {
            throw OrchestratorException.InvalidArgument("target", $"{OrchestratorException.Quote(text)} has an unclosed '{{'");
        }

        if (!text.StartsWith('/'))
        {
            throw OrchestratorException.InvalidArgument("target", $"{OrchestratorException.Quote(text)} is not an absolute path");
        }

        if (text.Split('/').Any(segment => segment is ".." or "."))
        {
            throw OrchestratorException.InvalidArgument("target", $"{OrchestratorException.Quote(text)} has a '.' or '..' segment; a target must stay inside the configured backup roots");
        }

        // Host and VM names cannot hold '/', so the directory a placeholder fills stays where the template puts it.
        try
        {
            BackupTargets.Resolve(RenderTarget(text, policy, "host", "vm"), backup, "target");
        }
        catch (OrchestratorException) when (backup.Roots.Count > 0)
        {
            throw OrchestratorException.InvalidArgument("target", $"{OrchestratorException.Quote(text)} is outside the configured backup roots ({string.Join(", ", backup.Roots)})");
        }

        return text;
    }

    /// <summary>The field of one label: <c>selector.labels.KEY</c>, or <c>selector.labels</c> when the key itself is unfit to name a field.</summary>
    private static string LabelField(string key) =>
        key.Length is > 0 and <= 63 && LabelKeyPattern().IsMatch(key) ? $"selector.labels.{key}" : "selector.labels";

    [GeneratedRegex("^[A-Za-z0-9._*?-]+\\z")]
    private static partial Regex HostPattern();

    [GeneratedRegex("^[A-Za-z0-9._/-]+\\z")]
    private static partial Regex LabelKeyPattern();

    [GeneratedRegex(@"\{[^{}]*\}")]
    private static partial Regex PlaceholderPattern();
}
