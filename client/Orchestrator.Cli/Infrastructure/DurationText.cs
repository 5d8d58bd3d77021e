using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Orchestrator.Cli.Infrastructure;

/// <summary>
/// Durations as people type them: a number of seconds (<c>90</c>, <c>1.5</c>) or amounts with units, largest
/// first by habit: <c>500ms</c>, <c>45s</c>, <c>5m</c>, <c>26h</c>, <c>7d</c>, <c>1h30m</c>.
/// </summary>
internal static partial class DurationText
{
    public static bool TryParse(string text, out TimeSpan value)
    {
        value = TimeSpan.Zero;
        if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double seconds))
        {
            if (!double.IsFinite(seconds) || Math.Abs(seconds) > TimeSpan.MaxValue.TotalSeconds)
            {
                return false;
            }

            value = TimeSpan.FromSeconds(seconds);
            return true;
        }

        var match = DurationPattern().Match(text);
        if (!match.Success || text.Length == 0)
        {
            return false;
        }

        try
        {
            foreach (Capture part in match.Groups["part"].Captures)
            {
                var unit = UnitPattern().Match(part.Value);
                double amount = double.Parse(unit.Groups["n"].Value, CultureInfo.InvariantCulture);
                value += unit.Groups["u"].Value switch
                {
                    "ms" => TimeSpan.FromMilliseconds(amount),
                    "s" => TimeSpan.FromSeconds(amount),
                    "m" => TimeSpan.FromMinutes(amount),
                    "h" => TimeSpan.FromHours(amount),
                    _ => TimeSpan.FromDays(amount),
                };
            }
        }
        catch (OverflowException)
        {
            return false;
        }

        return true;
    }

    /// <summary>
    /// The way people write an RPO: whole days as <c>7d</c>, else hours, minutes and seconds (<c>26h</c>,
    /// <c>1h30m</c>, <c>45s</c>); <c>0s</c> for zero. Fractions of a second are dropped.
    /// </summary>
    public static string Format(TimeSpan value)
    {
        long seconds = (long)value.TotalSeconds;
        if (seconds == 0)
        {
            return "0s";
        }

        var text = new StringBuilder(seconds < 0 ? "-" : "");
        seconds = Math.Abs(seconds);
        if (seconds % 86400 == 0)
        {
            return text.Append(seconds / 86400).Append('d').ToString();
        }

        Append(seconds / 3600, "h");
        Append(seconds / 60 % 60, "m");
        Append(seconds % 60, "s");
        return text.ToString();

        void Append(long amount, string unit)
        {
            if (amount > 0)
            {
                text.Append(amount.ToString(CultureInfo.InvariantCulture)).Append(unit);
            }
        }
    }

    [GeneratedRegex(@"^(?<part>\d+(\.\d+)?(ms|s|m|h|d))+$")]
    private static partial Regex DurationPattern();

    [GeneratedRegex(@"^(?<n>\d+(\.\d+)?)(?<u>ms|s|m|h|d)$")]
    private static partial Regex UnitPattern();
}
