using Orchestrator.Cli.Infrastructure;

namespace Orchestrator.Cli.Tests;

/// <summary>The sizes and durations of policy files, and how durations read in tables.</summary>
public sealed class PolicyValueTests
{
    [Theory]
    [InlineData("0", 0L)]
    [InlineData("123", 123L)]
    [InlineData("1B", 1L)]
    [InlineData("8k", 8L << 10)]
    [InlineData("8KiB", 8L << 10)]
    [InlineData("8KB", 8_000L)]
    [InlineData("3M", 3L << 20)]
    [InlineData("3mib", 3L << 20)]
    [InlineData("3MB", 3_000_000L)]
    [InlineData("5GiB/s", 5L << 30)]
    [InlineData("5 GB", 5_000_000_000L)]
    [InlineData("2T", 2L << 40)]
    [InlineData("2TB", 2_000_000_000_000L)]
    public void ByteSize_WholeNumberWithBinaryOrDecimalUnit_Parses(string text, long expected)
    {
        Assert.True(ByteSize.TryParse(text, out long bytes));
        Assert.Equal(expected, bytes);
    }

    [Theory]
    [InlineData("")]
    [InlineData("-1")]
    [InlineData("1.5M")]
    [InlineData("1,000")]
    [InlineData("1 Mbit")]
    [InlineData("1PB")]
    [InlineData("M")]
    [InlineData("1  M")]
    [InlineData("9223372036854775807K")]
    public void ByteSize_Malformed_IsRefused(string text)
    {
        Assert.False(ByteSize.TryParse(text, out _));
    }

    [Theory]
    [InlineData(93600, "26h")]
    [InlineData(604800, "7d")]
    [InlineData(5400, "1h30m")]
    [InlineData(90061, "25h1m1s")]
    [InlineData(45, "45s")]
    [InlineData(0, "0s")]
    public void DurationText_Format_AsPeopleWriteAnRpo(long seconds, string expected)
    {
        Assert.Equal(expected, DurationText.Format(TimeSpan.FromSeconds(seconds)));
    }

    [Theory]
    [InlineData("26h")]
    [InlineData("7d")]
    [InlineData("1h30m")]
    [InlineData("45s")]
    public void DurationText_FormatThenParse_RoundTrips(string text)
    {
        Assert.True(DurationText.TryParse(text, out TimeSpan value));
        Assert.Equal(text, DurationText.Format(value));
    }

    [Theory]
    [InlineData("1e400")]
    [InlineData("99999999999999999999d")]
    [InlineData("26 hours")]
    [InlineData("h")]
    public void DurationText_OutOfRangeOrMalformed_IsRefusedNotThrown(string text)
    {
        Assert.False(DurationText.TryParse(text, out _));
    }
}
