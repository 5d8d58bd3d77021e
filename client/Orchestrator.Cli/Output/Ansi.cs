namespace Orchestrator.Cli.Output;

/// <summary>ANSI styles, applied only when the environment says stdout is an interactive terminal.</summary>
internal static class Ansi
{
    public static string Bold(string text, bool color) => color ? $"\u001b[1m{text}\u001b[0m" : text;

    /// <summary>
    /// <paramref name="line"/> cut to <paramref name="width"/> visible characters (escape sequences do not count), with
    /// styles reset when the cut falls inside one; unchanged when it fits.
    /// </summary>
    public static string Truncate(string line, int width)
    {
        var text = new System.Text.StringBuilder();
        int visible = 0;
        for (int i = 0; i < line.Length; i++)
        {
            if (line[i] == '\u001b')
            {
                int end = line.IndexOf('m', i);
                end = end < 0 ? line.Length - 1 : end;
                text.Append(line, i, end - i + 1);
                i = end;
                continue;
            }

            if (visible == width)
            {
                return text.Append("\u001b[0m").ToString();
            }

            text.Append(line[i]);
            visible++;
        }

        return line;
    }
}
