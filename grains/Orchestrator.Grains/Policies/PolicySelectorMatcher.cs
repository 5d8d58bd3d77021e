namespace Orchestrator.Grains.Policies;

/// <summary>Whether a policy's selector picks a VM (globs on host and VM name, exact label values or <c>*</c>).</summary>
public static class PolicySelectorMatcher
{
    public static bool Matches(PolicySelector selector, string host, string vm, IReadOnlyDictionary<string, string> labels)
    {
        ArgumentNullException.ThrowIfNull(selector);
        return (selector.Hosts.Count == 0 || selector.Hosts.Any(p => Glob(p, host)))
            && (selector.Vms.Count == 0 || selector.Vms.Any(p => Glob(p, vm)))
            && selector.Labels.All(l => labels.TryGetValue(l.Key, out var value) && (l.Value == "*" || l.Value == value));
    }

    /// <summary>Glob match: <c>*</c> any run of characters (also none), <c>?</c> exactly one; everything else literal and case-sensitive.</summary>
    public static bool Glob(string pattern, string text)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        ArgumentNullException.ThrowIfNull(text);

        // Iterative matcher with one backtrack point: linear in practice, no regex, no catastrophic patterns.
        int p = 0, t = 0, star = -1, mark = 0;
        while (t < text.Length)
        {
            if (p < pattern.Length && (pattern[p] == '?' || pattern[p] == text[t]))
            {
                p++;
                t++;
            }
            else if (p < pattern.Length && pattern[p] == '*')
            {
                star = p++;
                mark = t;
            }
            else if (star >= 0)
            {
                p = star + 1;
                t = ++mark;
            }
            else
            {
                return false;
            }
        }

        while (p < pattern.Length && pattern[p] == '*')
        {
            p++;
        }

        return p == pattern.Length;
    }
}
