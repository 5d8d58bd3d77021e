using System.Globalization;

namespace Orchestrator.Cli.Output;

/// <summary>How values read in tables.</summary>
internal static class TextFormat
{
    public static string? Timestamp(DateTime? value) =>
        value is { } time ? UtcTimestampConverter.ToText(time) : null;

    public static string YesNo(bool value) => value ? "yes" : "no";

    /// <summary>A size in bytes, in the largest binary unit that keeps it at 1 or more: "512 B", "1.5 KiB", "20 GiB".</summary>
    public static string Bytes(long bytes)
    {
        (long unit, string name) = bytes switch
        {
            >= 1L << 40 => (1L << 40, "TiB"),
            >= 1L << 30 => (1L << 30, "GiB"),
            >= 1L << 20 => (1L << 20, "MiB"),
            >= 1L << 10 => (1L << 10, "KiB"),
            _ => (1L, "B"),
        };
        return $"{((double)bytes / unit).ToString("0.#", CultureInfo.InvariantCulture)} {name}";
    }

    /// <summary>A whole percentage of <paramref name="part"/> in <paramref name="total"/>, rounded down: "0%" for an empty total.</summary>
    public static string Percent(long part, long total) =>
        $"{(total <= 0 ? 0 : (int)Math.Min(100, part * 100.0 / total)).ToString(CultureInfo.InvariantCulture)}%";

    /// <summary>A duration as h:mm:ss ("0:00:07", "12:03:45"); days count as hours; negative is 0.</summary>
    public static string Duration(TimeSpan value)
    {
        long seconds = Math.Max(0, (long)value.TotalSeconds);
        return string.Create(CultureInfo.InvariantCulture, $"{seconds / 3600}:{seconds / 60 % 60:00}:{seconds % 60:00}");
    }

    /// <summary>A size in KiB, in the largest binary unit that keeps it at 1 or more: "512 KiB", "2 GiB", "1.5 GiB".</summary>
    public static string Kib(long kib)
    {
        const long Mib = 1024;
        const long Gib = 1024 * 1024;
        const long Tib = 1024L * 1024 * 1024;
        return kib switch
        {
            >= Tib => Scaled(kib, Tib, "TiB"),
            >= Gib => Scaled(kib, Gib, "GiB"),
            >= Mib => Scaled(kib, Mib, "MiB"),
            _ => $"{kib.ToString(CultureInfo.InvariantCulture)} KiB",
        };

        static string Scaled(long value, long unit, string name) =>
            $"{((double)value / unit).ToString("0.#", CultureInfo.InvariantCulture)} {name}";
    }
}
