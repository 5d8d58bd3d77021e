using System.Globalization;

namespace Orchestrator.Cli.Infrastructure;

/// <summary>
/// Rates in bytes per second as people type them: a whole number with an optional binary suffix,
/// K (KiB/s), M (MiB/s) or G (GiB/s), in either case: <c>1048576</c>, <c>512K</c>, <c>50M</c>, <c>1g</c>.
/// 0 means no limit, as in the proto.
/// </summary>
internal static class ByteRate
{
    public static bool TryParse(string text, string optionName, out long bytesPerSecond, out string error)
    {
        bytesPerSecond = 0;
        string number = text;
        long unit = 1;
        if (text.Length > 0 && char.ToUpperInvariant(text[^1]) is 'K' or 'M' or 'G')
        {
            unit = char.ToUpperInvariant(text[^1]) switch
            {
                'K' => 1024L,
                'M' => 1024L * 1024,
                _ => 1024L * 1024 * 1024,
            };
            number = text[..^1];
        }

        // NumberStyles.None: digits only, so no sign, spaces, separators or decimals slip through.
        if (number.Length > 0
            && long.TryParse(number, NumberStyles.None, CultureInfo.InvariantCulture, out long value)
            && value <= long.MaxValue / unit)
        {
            bytesPerSecond = value * unit;
            error = "";
            return true;
        }

        error = $"{optionName}: '{text}' is not a rate in bytes per second: a whole number, 0 or more, "
            + "with an optional binary suffix K, M or G (e.g. 50M for 50 MiB/s)";
        return false;
    }
}
