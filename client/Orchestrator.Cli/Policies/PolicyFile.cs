using System.Globalization;
using Google.Protobuf.WellKnownTypes;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Infrastructure;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Orchestrator.Cli.Policies;

/// <summary>
/// Reads a policy file (YAML, or JSON, which YAML reads as a flow mapping) into the PolicySpec message to send,
/// remembering the line of every key so that errors, ours and the server's, point into the file. Checks syntax,
/// types, formats and unknown fields only; what a value means (a cron expression, a time zone, a target inside the
/// backup roots, budgets of at least 1) is the server's to judge. A field the file leaves out is left unset in the
/// message and takes the server's default. The schema is in README.md ("Policies").
/// </summary>
internal static class PolicyFile
{
    public static readonly string[] TopLevelFields =
        ["name", "kind", "description", "selector", "schedule", "retention", "target", "quiesce", "verify", "bandwidth", "concurrency", "rpo", "test_restore", "level", "full_every"];

    private static readonly string[] SelectorFields = ["hosts", "vms", "labels"];
    private static readonly string[] ScheduleFields = ["cron", "time_zone"];
    private static readonly string[] RetentionFields = ["keep_last", "hourly", "daily", "weekly", "monthly"];
    private static readonly string[] ConcurrencyFields = ["per_host", "fleet"];
    private static readonly string[] TestRestoreFields = ["every", "probe", "rto", "timeout"];

    /// <summary>
    /// Parses <paramref name="text"/>; <paramref name="source"/> names it in errors (a path, or &lt;stdin&gt;).
    /// Throws <see cref="PolicyFileException"/> with every problem found.
    /// </summary>
    public static PolicyDocument Parse(string text, string source)
    {
        var stream = new YamlStream();
        var scanner = new Scanner(new StringReader(text));
        try
        {
            stream.Load(new Parser(scanner));
        }
        catch (YamlException e)
        {
            throw new PolicyFileException(source, [new PolicyFileError(e.Start.Line, e.Start.Column, null, $"malformed YAML: {e.Message}")]);
        }
        catch (InvalidOperationException)
        {
            // YamlDotNet's scanner fails this way on some broken input (an unclosed [ or {): where it stopped is all it knows.
            Mark at = scanner.CurrentPosition;
            throw new PolicyFileException(source, [new PolicyFileError(at.Line, at.Column, null, "malformed YAML: the parser could not go on here (an unclosed [ or {?)")]);
        }

        if (stream.Documents.Count == 0)
        {
            throw new PolicyFileException(source, [new PolicyFileError(null, null, null, "the file holds no policy")]);
        }

        if (stream.Documents.Count > 1)
        {
            throw new PolicyFileException(source, [new PolicyFileError(stream.Documents[1].RootNode.Start.Line, null, null, "one policy per file: a second document starts here")]);
        }

        YamlNode root = stream.Documents[0].RootNode;
        var reader = new Reader();
        if (root is not YamlMappingNode mapping)
        {
            throw new PolicyFileException(source, [new PolicyFileError(root.Start.Line, null, null, $"a policy is a mapping of fields ({string.Join(", ", TopLevelFields)}), not {Describe(root)}")]);
        }

        PolicySpec spec = reader.Spec(mapping);
        if (reader.Errors.Count > 0)
        {
            throw new PolicyFileException(source, reader.Errors);
        }

        return new PolicyDocument(source, spec, reader.Lines);
    }

    private static bool IsNull(YamlNode node) =>
        node is YamlScalarNode { Style: ScalarStyle.Plain or ScalarStyle.Any, Value: null or "" or "~" or "null" or "Null" or "NULL" };

    private static string Describe(YamlNode node) => node switch
    {
        YamlMappingNode => "a mapping",
        YamlSequenceNode => "a list",
        _ when IsNull(node) => "null",
        YamlScalarNode scalar => $"'{scalar.Value}'",
        _ => "something else",
    };

    private static string Join(string prefix, string key) => prefix.Length == 0 ? key : $"{prefix}.{key}";

    /// <summary>One pass over the document: the spec, every key's line, and every problem.</summary>
    private sealed class Reader
    {
        public List<PolicyFileError> Errors { get; } = [];

        public Dictionary<string, long> Lines { get; } = new(StringComparer.Ordinal);

        public PolicySpec Spec(YamlMappingNode root)
        {
            var spec = new PolicySpec();
            Fields(root, "", TopLevelFields, (key, path, value) =>
            {
                switch (key)
                {
                    case "name":
                        spec.Name = Text(path, value) ?? "";
                        break;
                    case "kind":
                        spec.Kind = Choice(path, value, "a policy kind", PolicyKinds) ?? PolicyKind.Unspecified;
                        break;
                    case "description":
                        spec.Description = Text(path, value) ?? "";
                        break;
                    case "selector":
                        spec.Selector = Selector(path, value);
                        break;
                    case "schedule":
                        spec.Schedule = Schedule(path, value);
                        break;
                    case "retention":
                        spec.Retention = Retention(path, value);
                        break;
                    case "target":
                        spec.Target = Text(path, value) ?? "";
                        break;
                    case "quiesce":
                        spec.Quiesce = Choice(path, value, "a quiesce mode", QuiesceModes) ?? QuiesceMode.Unspecified;
                        break;
                    case "verify":
                        if (Flag(path, value) is { } verify)
                        {
                            spec.Verify = verify;
                        }

                        break;
                    case "bandwidth":
                        spec.BandwidthBytesPerSecond = Size(path, value) ?? 0;
                        break;
                    case "concurrency":
                        spec.Concurrency = Concurrency(path, value);
                        break;
                    case "rpo":
                        spec.Rpo = Period(path, value) is { } rpo ? Duration.FromTimeSpan(rpo) : null;
                        break;
                    case "test_restore":
                        spec.TestRestore = TestRestore(path, value);
                        break;
                    case "level":
                        spec.Level = Choice(path, value, "a level", Levels) switch
                        {
                            true => "auto",
                            _ => "", // full is the default: left unset, as the server reads it back
                        };
                        break;
                    case "full_every":
                        if (value is YamlScalarNode { Value: { } fullText } && System.Text.RegularExpressions.Regex.Match(fullText.Trim(), @"^([0-9]{1,9})(\s*runs?)?$") is { Success: true } fullRuns)
                        {
                            spec.FullEveryRuns = int.Parse(fullRuns.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
                        }
                        else if (Period(path, value) is { } fullEvery)
                        {
                            spec.FullEvery = Duration.FromTimeSpan(fullEvery);
                        }

                        break;
                }
            });
            return spec;
        }

        private static readonly (string Name, PolicyKind Value)[] PolicyKinds =
            [("live-backup", PolicyKind.LiveBackup), ("checkpoint", PolicyKind.Checkpoint)];

        private static readonly (string Name, bool Value)[] Levels = [("full", false), ("auto", true)];

        private static readonly (string Name, QuiesceMode Value)[] QuiesceModes =
            [("off", QuiesceMode.Off), ("try", QuiesceMode.Try), ("required", QuiesceMode.Required)];

        private PolicySelector? Selector(string path, YamlNode node)
        {
            if (Mapping(path, node, SelectorFields) is not { } mapping)
            {
                return null;
            }

            var selector = new PolicySelector();
            Fields(mapping, path, SelectorFields, (key, field, value) =>
            {
                switch (key)
                {
                    case "hosts":
                        selector.Hosts.AddRange(StringList(field, value, "host name globs, e.g. [\"kvm-*\"]"));
                        break;
                    case "vms":
                        selector.Vms.AddRange(StringList(field, value, "VM name globs, e.g. [\"web-*\", \"db-1\"]"));
                        break;
                    default:
                        foreach ((string label, string text) in Labels(field, value))
                        {
                            selector.Labels[label] = text;
                        }

                        break;
                }
            });
            return selector;
        }

        private PolicySchedule? Schedule(string path, YamlNode node)
        {
            if (Mapping(path, node, ScheduleFields) is not { } mapping)
            {
                return null;
            }

            var schedule = new PolicySchedule();
            Fields(mapping, path, ScheduleFields, (key, field, value) =>
            {
                string text = Text(field, value) ?? "";
                if (key == "cron")
                {
                    schedule.Cron = text;
                }
                else
                {
                    schedule.TimeZone = text;
                }
            });
            return schedule;
        }

        private PolicyRetention? Retention(string path, YamlNode node)
        {
            if (Mapping(path, node, RetentionFields) is not { } mapping)
            {
                return null;
            }

            var retention = new PolicyRetention();
            Fields(mapping, path, RetentionFields, (key, field, value) =>
            {
                int count = Integer(field, value) ?? 0;
                switch (key)
                {
                    case "keep_last":
                        retention.KeepLast = count;
                        break;
                    case "hourly":
                        retention.Hourly = count;
                        break;
                    case "daily":
                        retention.Daily = count;
                        break;
                    case "weekly":
                        retention.Weekly = count;
                        break;
                    default:
                        retention.Monthly = count;
                        break;
                }
            });
            return retention;
        }

        private PolicyConcurrency? Concurrency(string path, YamlNode node)
        {
            if (Mapping(path, node, ConcurrencyFields) is not { } mapping)
            {
                return null;
            }

            var concurrency = new PolicyConcurrency();
            Fields(mapping, path, ConcurrencyFields, (key, field, value) =>
            {
                if (Integer(field, value) is not { } limit)
                {
                    return;
                }

                if (key == "per_host")
                {
                    concurrency.PerHost = limit;
                }
                else
                {
                    concurrency.Fleet = limit;
                }
            });
            return concurrency;
        }

        /// <summary>
        /// test_restore: {every: "N runs" (or a bare N) | a duration (7d), probe: agent | console:REGEX | command:CMD,
        /// rto: duration, timeout: duration}. The server checks the ranges and the probe again.
        /// </summary>
        private PolicyTestRestore? TestRestore(string path, YamlNode node)
        {
            if (Mapping(path, node, TestRestoreFields) is not { } mapping)
            {
                return null;
            }

            var test = new PolicyTestRestore();
            Fields(mapping, path, TestRestoreFields, (key, field, value) =>
            {
                switch (key)
                {
                    case "every":
                        if (value is YamlScalarNode { Value: { } text } && System.Text.RegularExpressions.Regex.Match(text.Trim(), @"^([0-9]{1,9})(\s*runs?)?$") is { Success: true } runs)
                        {
                            test.EveryRuns = int.Parse(runs.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
                        }
                        else if (Period(field, value) is { } every)
                        {
                            test.Every = Duration.FromTimeSpan(every);
                        }

                        break;
                    case "probe":
                        test.Probe = Text(field, value) ?? "";
                        break;
                    case "rto":
                        test.Rto = Period(field, value) is { } rto ? Duration.FromTimeSpan(rto) : null;
                        break;
                    default:
                        test.Timeout = Period(field, value) is { } timeout ? Duration.FromTimeSpan(timeout) : null;
                        break;
                }
            });
            return test;
        }

        /// <summary>Visits each field of <paramref name="mapping"/>, recording its line; unknown fields are errors.</summary>
        private void Fields(YamlMappingNode mapping, string prefix, string[] known, Action<string, string, YamlNode> visit)
        {
            foreach ((YamlNode keyNode, YamlNode value) in mapping.Children)
            {
                if (keyNode is not YamlScalarNode { Value: { Length: > 0 } key })
                {
                    Error(keyNode, prefix.Length == 0 ? "(key)" : $"{prefix}.(key)", $"a field name must be a plain word, not {Describe(keyNode)}");
                    continue;
                }

                string path = Join(prefix, key);
                Lines[path] = keyNode.Start.Line;
                if (!known.Contains(key, StringComparer.Ordinal))
                {
                    Error(keyNode, path, $"unknown field (expected {string.Join(", ", known)})");
                    continue;
                }

                visit(key, path, value);
            }
        }

        /// <summary>A nested mapping; null (absent) when the value is null, an error when it is anything else.</summary>
        private YamlMappingNode? Mapping(string path, YamlNode node, string[] fields)
        {
            if (node is YamlMappingNode mapping)
            {
                return mapping;
            }

            if (!IsNull(node))
            {
                Error(node, path, $"expected a mapping of {string.Join(", ", fields)}, not {Describe(node)}");
            }

            return null;
        }

        private string? Text(string path, YamlNode node)
        {
            if (IsNull(node))
            {
                return null;
            }

            if (node is YamlScalarNode scalar)
            {
                return scalar.Value ?? "";
            }

            Error(node, path, $"expected a string, not {Describe(node)}");
            return null;
        }

        private int? Integer(string path, YamlNode node)
        {
            if (IsNull(node))
            {
                return null;
            }

            if (node is YamlScalarNode { Value: { } text }
                && int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int value))
            {
                return value;
            }

            Error(node, path, $"{Describe(node)} is not an integer");
            return null;
        }

        private bool? Flag(string path, YamlNode node)
        {
            if (IsNull(node))
            {
                return null;
            }

            if (node is YamlScalarNode { Value: { } text } && bool.TryParse(text, out bool value))
            {
                return value;
            }

            Error(node, path, $"{Describe(node)} is not a boolean (true or false)");
            return null;
        }

        private T? Choice<T>(string path, YamlNode node, string what, (string Name, T Value)[] choices)
            where T : struct
        {
            if (IsNull(node))
            {
                return null;
            }

            if (node is YamlScalarNode { Value: { } text })
            {
                foreach ((string name, T value) in choices)
                {
                    if (name == text)
                    {
                        return value;
                    }
                }
            }

            string names = string.Join(", ", choices[..^1].Select(c => c.Name)) + " or " + choices[^1].Name;
            Error(node, path, $"{Describe(node)} is not {what} (expected {names})");
            return null;
        }

        private long? Size(string path, YamlNode node)
        {
            if (IsNull(node))
            {
                return null;
            }

            if (node is YamlScalarNode { Value: { } text } && ByteSize.TryParse(text, out long bytes))
            {
                return bytes;
            }

            Error(node, path, $"{Describe(node)} is not a size in bytes per second (a whole number, or with a unit: "
                + "K, M, G, T or KiB..TiB for 1024s, KB..TB for 1000s; e.g. 100MiB; 0 is unlimited)");
            return null;
        }

        private TimeSpan? Period(string path, YamlNode node)
        {
            if (IsNull(node))
            {
                return null;
            }

            if (node is YamlScalarNode { Value: { } text } && DurationText.TryParse(text.Trim(), out TimeSpan value))
            {
                return value;
            }

            Error(node, path, $"{Describe(node)} is not a duration (e.g. 90m, 26h, 7d, 1h30m; a bare number is seconds; 0 is not tracked)");
            return null;
        }

        private List<string> StringList(string path, YamlNode node, string what)
        {
            var items = new List<string>();
            if (IsNull(node))
            {
                return items;
            }

            if (node is not YamlSequenceNode sequence)
            {
                Error(node, path, $"expected a list of {what}, not {Describe(node)}");
                return items;
            }

            for (int i = 0; i < sequence.Children.Count; i++)
            {
                YamlNode item = sequence.Children[i];
                string field = $"{path}[{i.ToString(CultureInfo.InvariantCulture)}]";
                Lines[field] = item.Start.Line;
                if (item is YamlScalarNode { Value: { } text } && !IsNull(item))
                {
                    items.Add(text);
                }
                else
                {
                    Error(item, field, $"expected a string, not {Describe(item)}");
                }
            }

            return items;
        }

        private List<(string Label, string Value)> Labels(string path, YamlNode node)
        {
            var labels = new List<(string, string)>();
            if (IsNull(node))
            {
                return labels;
            }

            if (node is not YamlMappingNode mapping)
            {
                Error(node, path, $"expected a mapping of label: value (\"*\" for any value), not {Describe(node)}");
                return labels;
            }

            foreach ((YamlNode keyNode, YamlNode value) in mapping.Children)
            {
                if (keyNode is not YamlScalarNode { Value: { Length: > 0 } key })
                {
                    Error(keyNode, $"{path}.(key)", $"a label name must be a string, not {Describe(keyNode)}");
                    continue;
                }

                string field = $"{path}.{key}";
                Lines[field] = keyNode.Start.Line;
                if (value is YamlScalarNode { Value: { } text } && !IsNull(value))
                {
                    labels.Add((key, text));
                }
                else
                {
                    Error(value, field, $"expected the label's value as a string (\"*\" for any value), not {Describe(value)}");
                }
            }

            return labels;
        }

        private void Error(YamlNode node, string field, string message) =>
            Errors.Add(new PolicyFileError(node.Start.Line, null, field, message));
    }
}

/// <summary>One problem in a policy file: where (line, and column for syntax errors), which field, what.</summary>
internal sealed record PolicyFileError(long? Line, long? Column, string? Field, string Message)
{
    /// <summary><c>FILE:LINE: FIELD: message</c>, <c>FILE:LINE:COLUMN: message</c> or <c>FILE: message</c>.</summary>
    public string Format(string source)
    {
        string where = (Line, Column) switch
        {
            ({ } line, { } column) => $"{source}:{line.ToString(CultureInfo.InvariantCulture)}:{column.ToString(CultureInfo.InvariantCulture)}",
            ({ } line, null) => $"{source}:{line.ToString(CultureInfo.InvariantCulture)}",
            _ => source,
        };
        return Field is null ? $"{where}: {Message}" : $"{where}: {Field}: {Message}";
    }
}

/// <summary>A policy file that cannot be sent: every problem found in it.</summary>
internal sealed class PolicyFileException(string source, IReadOnlyList<PolicyFileError> errors)
    : Exception(errors.Count > 0 ? errors[0].Format(source) : source)
{
    /// <summary>The file as errors name it (a path, or &lt;stdin&gt;).</summary>
    public string FileName { get; } = source;

    public IReadOnlyList<PolicyFileError> Errors { get; } = errors;
}

/// <summary>A parsed policy file: the spec to send and the line of every field, to point the server's errors into the file.</summary>
internal sealed class PolicyDocument(string source, PolicySpec spec, IReadOnlyDictionary<string, long> lines)
{
    public string Source { get; } = source;

    public PolicySpec Spec { get; } = spec;

    /// <summary>
    /// The line of <paramref name="field"/> (a server path such as <c>schedule.cron</c> or <c>selector.vms[1]</c>), or of
    /// its nearest enclosing field the file has (<c>concurrency</c> for a missing <c>concurrency.fleet</c>); null when
    /// the file has none of them (a missing top-level field).
    /// </summary>
    public long? LineOf(string field)
    {
        for (string path = field; path.Length > 0; path = Parent(path))
        {
            if (lines.TryGetValue(path, out long line))
            {
                return line;
            }
        }

        return null;
    }

    /// <summary>A server's complaint about <paramref name="field"/> as <c>FILE:LINE: FIELD: reason</c>.</summary>
    public string Describe(string field, string reason) =>
        new PolicyFileError(LineOf(field), null, field, reason).Format(Source);

    private static string Parent(string path)
    {
        int cut = Math.Max(path.LastIndexOf('.'), path.EndsWith(']') ? path.LastIndexOf('[') : -1);
        return cut <= 0 ? "" : path[..cut];
    }
}
