namespace Orchestrator.Cli.Output;

/// <summary>
/// A block of lines redrawn in place on a terminal: each draw moves the cursor back up over the previous
/// frame and clears it (ANSI CSI n F, CSI J). Only for an interactive stdout; never for files or pipes. Lines are
/// cut to the terminal's width when it is known: a line the terminal wrapped would take two rows, and the next draw
/// would move up too few.
/// </summary>
internal sealed class LiveFrame(TextWriter writer, Func<int?>? width = null)
{
    private int _previousLines;

    public void Draw(IReadOnlyList<string> lines)
    {
        var frame = new System.Text.StringBuilder();
        if (_previousLines > 0)
        {
            frame.Append($"\u001b[{_previousLines}F\u001b[J");
        }

        int? columns = width?.Invoke();
        foreach (string line in lines)
        {
            // One column short of the width: some terminals wrap a line that fills the last column.
            frame.Append(columns is > 1 ? Ansi.Truncate(line, columns.Value - 1) : line).Append(writer.NewLine);
        }

        // One write per frame, so the terminal never shows half of one.
        writer.Write(frame.ToString());
        writer.Flush();
        _previousLines = lines.Count;
    }
}
