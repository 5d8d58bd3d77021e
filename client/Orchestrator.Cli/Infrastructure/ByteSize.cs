using System.Globalization;
using System.Text.RegularExpressions;

namespace Orchestrator.Cli.Infrastructure;

/// <summary>
/// Byte amounts in policy files: a whole number of bytes, or a whole number with a unit, with or without a space:
/// binary <c>K</c>/<c>KiB</c>, <c>M</c>/<c>MiB</c>, <c>G</c>/<c>GiB</c>, <c>T</c>/<c>TiB</c> (powers of 1024, as
/// <c>--bandwidth</c> reads K, M and G) or decimal <c>KB</c>, <c>MB</c>, <c>GB</c>, <c>TB</c> (powers of 1000), and
/// <c>B</c>; units in any case; an optional <c>/s</c> for rates: <c>104857600</c>, <c>100MiB</c>, <c>100 MiB/s</c>,
/// <c>1G</c>, <c>500MB</c>.
/// </summary>
internal static partial class ByteSize
{
    public static bool TryParse(string text, out long bytes)
    {
        bytes = 0;
        var match = SizePattern().Match(text.Trim());
        if (!match.Success
            || !long.TryParse(match.Groups["n"].Value, NumberStyles.None, CultureInfo.InvariantCulture, out long amount))
        {
            return false;
        }

        string unit = match.Groups["u"].Value.ToUpperInvariant();
        long scale = unit switch
        {
            "" or "B" => 1,
            "K" or "KIB" => 1L << 10,
            "M" or "MIB" => 1L << 20,
            "G" or "GIB" => 1L << 30,
            "T" or "TIB" => 1L << 40,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            _ => 0,
        };
        if (scale == 0 || amount > long.MaxValue / scale)
        {
            return false;
        }

        bytes = amount * scale;
        return true;
    }

    [GeneratedRegex(@"^(?<n>[0-9]+) ?(?<u>[A-Za-z]*)(/s)?$")]
    private static partial Regex SizePattern();
}
