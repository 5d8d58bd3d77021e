using System.Globalization;

namespace Orchestrator.Cli.Output;

/// <summary>How values read in tables.</summary>
internal static class TextFormat
{
    public static string? Timestamp(DateTime? value) =>
        value is { } time ? UtcTimestampConverter.ToText(time) : null;

    public static string YesNo(bool value) => value ? "yes" : "no";

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
