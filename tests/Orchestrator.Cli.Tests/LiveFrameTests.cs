using Orchestrator.Cli.Output;

namespace Orchestrator.Cli.Tests;

/// <summary>Live frames on terminals narrower than their lines.</summary>
public sealed class LiveFrameTests
{
    private static readonly string NL = Environment.NewLine;

    [Fact]
    public void Draw_TerminalWidthKnown_CutsLongLinesOneColumnShort_SoTheyNeverWrap()
    {
        var writer = new StringWriter();
        var live = new LiveFrame(writer, () => 6);

        live.Draw(["abcdefgh", "abc"]);
        live.Draw(["x"]);

        Assert.Equal($"abcde\u001b[0m{NL}abc{NL}\u001b[2F\u001b[Jx{NL}", writer.ToString());
    }

    [Fact]
    public void Draw_WidthUnknown_KeepsLinesWhole()
    {
        var writer = new StringWriter();

        new LiveFrame(writer, () => null).Draw(["abcdefgh"]);

        Assert.Equal($"abcdefgh{NL}", writer.ToString());
    }

    [Theory]
    [InlineData("plain text", 5, "plain\u001b[0m")]
    [InlineData("short", 5, "short")]
    [InlineData("\u001b[1mbold\u001b[0m tail", 6, "\u001b[1mbold\u001b[0m t\u001b[0m")]
    [InlineData("\u001b[1mbold\u001b[0m", 2, "\u001b[1mbo\u001b[0m")]
    [InlineData("\u001b[1mbold\u001b[0m", 4, "\u001b[1mbold\u001b[0m")]
    public void Truncate_CountsVisibleCharactersOnly(string line, int width, string expected)
    {
        Assert.Equal(expected, Ansi.Truncate(line, width));
    }
}
