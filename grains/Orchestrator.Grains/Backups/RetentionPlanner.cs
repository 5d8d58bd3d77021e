using System.Globalization;

namespace Orchestrator.Grains.Backups;

/// <summary>
/// Which dated items to keep: the newest <c>keepLast</c>, plus the newest item of each of the last
/// <c>daily</c> days, <c>weekly</c> ISO weeks and <c>monthly</c> months that have one (restic-style "forget").
/// Everything else may be pruned. Buckets are computed in <paramref name="zone"/>.
/// </summary>
public static class RetentionPlanner
{
    public static IReadOnlySet<string> Keep(
        IEnumerable<(string Id, DateTimeOffset At)> items,
        int keepLast,
        int daily = 0,
        int weekly = 0,
        int monthly = 0,
        TimeZoneInfo? zone = null)
    {
        if (keepLast < 0 || daily < 0 || weekly < 0 || monthly < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(keepLast), "retention counts cannot be negative");
        }

        zone ??= TimeZoneInfo.Utc;
        var newestFirst = items.OrderByDescending(i => i.At).ThenByDescending(i => i.Id, StringComparer.Ordinal).ToList();
        var keep = new HashSet<string>(newestFirst.Take(keepLast).Select(i => i.Id), StringComparer.Ordinal);
        KeepNewestPerBucket(newestFirst, daily, zone, keep, t => t.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture));
        KeepNewestPerBucket(newestFirst, weekly, zone, keep, t => $"{ISOWeek.GetYear(t.DateTime)}-W{ISOWeek.GetWeekOfYear(t.DateTime):00}");
        KeepNewestPerBucket(newestFirst, monthly, zone, keep, t => t.ToString("yyyy-MM", CultureInfo.InvariantCulture));
        return keep;
    }

    private static void KeepNewestPerBucket(
        List<(string Id, DateTimeOffset At)> newestFirst,
        int buckets,
        TimeZoneInfo zone,
        HashSet<string> keep,
        Func<DateTimeOffset, string> bucketOf)
    {
        if (buckets == 0)
        {
            return;
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (id, at) in newestFirst)
        {
            if (seen.Add(bucketOf(TimeZoneInfo.ConvertTime(at, zone))))
            {
                keep.Add(id);
                if (seen.Count == buckets)
                {
                    return;
                }
            }
        }
    }
}
