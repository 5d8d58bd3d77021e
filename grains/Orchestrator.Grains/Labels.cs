namespace Orchestrator.Grains;

/// <summary>Label sets (VM labels, selector labels): compared by content, whatever the dictionary type or order.</summary>
internal static class Labels
{
    public static bool SameEntries(IReadOnlyDictionary<string, string> a, IReadOnlyDictionary<string, string> b) =>
        a.Count == b.Count && a.All(kv => b.TryGetValue(kv.Key, out var v) && v == kv.Value);
}
