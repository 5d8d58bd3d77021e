using System.Globalization;
using Google.Protobuf;
using Google.Protobuf.Reflection;

namespace Orchestrator.Silo.Services;

/// <summary>
/// The first check of every gRPC request, before any service code runs: walks the message by its descriptor, so a
/// field added to a .proto tomorrow is covered too. Every string is bounded in length and holds no control character
/// (a description may hold line breaks and tabs); every list and map is bounded in entries. The error names the field
/// by its path (<c>retention.keep_last</c>, <c>selector.vms[2]</c>; an ApplyPolicy request's fields relative to its
/// spec, as policy files name them) and quotes none of the value. What a value means (a name's pattern, a number's
/// range, a path's root) is checked after this by the services and grains.
/// </summary>
internal static class RequestShape
{
    /// <summary>Longest string field by default (characters).</summary>
    public const int MaxString = 1024;

    /// <summary>Longest path field (<c>target</c>): PATH_MAX.</summary>
    public const int MaxPath = 4096;

    /// <summary>Most entries of a repeated or map field.</summary>
    public const int MaxEntries = 256;

    /// <summary>Fields whose text may span lines (tabs and line breaks allowed, other control characters not).</summary>
    private static readonly HashSet<string> MultiLine = new(StringComparer.Ordinal) { "description" };

    /// <summary>Fields that hold a filesystem path.</summary>
    private static readonly HashSet<string> Paths = new(StringComparer.Ordinal) { "target" };

    /// <summary>Throws InvalidArgument naming the first field out of shape.</summary>
    public static void Check(IMessage request)
    {
        ArgumentNullException.ThrowIfNull(request);

        // ApplyPolicy names its fields as the policy file does (schedule.cron, not spec.schedule.cron): the CLI points
        // the server's field back into the file.
        if (request.Descriptor.Fields.InFieldNumberOrder() is [{ Name: "spec", FieldType: FieldType.Message } spec]
            && spec.Accessor.GetValue(request) is IMessage inner)
        {
            Walk(inner, "");
            return;
        }

        Walk(request, "");
    }

    private static void Walk(IMessage message, string prefix)
    {
        foreach (var field in message.Descriptor.Fields.InFieldNumberOrder())
        {
            var path = prefix.Length == 0 ? field.Name : $"{prefix}.{field.Name}";
            var value = field.Accessor.GetValue(message);
            if (field.IsMap)
            {
                var map = (System.Collections.IDictionary)value;
                CheckCount(path, map.Count);
                var valueField = field.MessageType.FindFieldByNumber(2);
                foreach (System.Collections.DictionaryEntry entry in map)
                {
                    if (entry.Key is string key)
                    {
                        CheckString(path, field.Name, key);
                    }

                    var entryPath = entry.Key is string k && IsPlainKey(k) ? $"{path}.{k}" : path;
                    CheckValue(valueField, entryPath, entry.Value);
                }
            }
            else if (field.IsRepeated)
            {
                var list = (System.Collections.IList)value;
                CheckCount(path, list.Count);
                for (var i = 0; i < list.Count; i++)
                {
                    CheckValue(field, string.Create(CultureInfo.InvariantCulture, $"{path}[{i}]"), list[i]);
                }
            }
            else
            {
                CheckValue(field, path, value);
            }
        }
    }

    private static void CheckValue(FieldDescriptor field, string path, object? value)
    {
        switch (value)
        {
            case string text:
                CheckString(path, field.Name, text);
                break;
            case IMessage nested:
                Walk(nested, path);
                break;
        }
    }

    private static void CheckCount(string path, int count)
    {
        if (count > MaxEntries)
        {
            throw OrchestratorException.InvalidArgument(path, string.Create(CultureInfo.InvariantCulture, $"{count} entries; at most {MaxEntries}"));
        }
    }

    private static void CheckString(string path, string name, string text)
    {
        var max = Paths.Contains(name) ? MaxPath : MaxString;
        if (text.Length > max)
        {
            throw OrchestratorException.InvalidArgument(path, string.Create(CultureInfo.InvariantCulture,
                $"{text.Length} characters ({System.Text.Encoding.UTF8.GetByteCount(text)} bytes); at most {max}"));
        }

        var multiLine = MultiLine.Contains(name);
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            if (char.IsControl(c) && !(multiLine && c is '\n' or '\r' or '\t'))
            {
                throw OrchestratorException.InvalidArgument(path, string.Create(CultureInfo.InvariantCulture,
                    $"holds a control character (U+{(int)c:X4}) at position {i}; control characters are not allowed"));
            }
        }
    }

    /// <summary>A map key fit to be part of a field path (a label key); any other key is named by the map's path alone.</summary>
    private static bool IsPlainKey(string key) =>
        key.Length is > 0 and <= 63 && key.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-' or '/');
}
