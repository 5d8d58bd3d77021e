namespace Orchestrator.Cli.Output;

/// <summary>
/// A block of lines redrawn in place on a terminal: each draw moves the cursor back up over the previous
/// frame and clears it (ANSI CSI n F, CSI J). Only for an interactive stdout; never for files or pipes.
/// </summary>
internal sealed class LiveFrame(TextWriter writer)
{
    private int _previousLines;

    public void Draw(IReadOnlyList<string> lines)
    {
        var frame = new System.Text.StringBuilder();
        if (_previousLines > 0)
        {
            frame.Append($"\u001b[{_previousLines}F\u001b[J");
        }

        foreach (string line in lines)
        {
            frame.Append(line).Append(writer.NewLine);
        }

        // One write per frame, so the terminal never shows half of one.
        writer.Write(frame.ToString());
        writer.Flush();
        _previousLines = lines.Count;
    }
}
