using System.Globalization;

namespace Orchestrator.Bench;

internal static class Stats
{
    public static double Median(IReadOnlyList<double> xs)
    {
        var sorted = xs.Order().ToArray();
        var mid = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    }

    public static string Summary(IReadOnlyList<double> xs, string unit = "ms") =>
        string.Create(CultureInfo.InvariantCulture, $"{Median(xs),8:F1} {unit}  [{xs.Min(),7:F1} .. {xs.Max(),7:F1}]");
}
