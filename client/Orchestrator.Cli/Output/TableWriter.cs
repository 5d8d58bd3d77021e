namespace Orchestrator.Cli.Output;

/// <summary>
/// Tables for people: a header row, columns aligned with two spaces between them, "-" for an empty cell,
/// no trailing spaces. The header is bold only when colors are on (never when stdout is redirected).
/// </summary>
internal sealed class TableWriter(params IReadOnlyList<TableColumn> columns)
{
    public const string Empty = "-";
    private const string Gap = "  ";

    private readonly IReadOnlyList<TableColumn> _columns = columns;
    private readonly List<string[]> _rows = [];

    public int RowCount => _rows.Count;

    public TableWriter AddRow(params string?[] cells)
    {
        if (cells.Length != _columns.Count)
        {
            throw new ArgumentException($"A row has {cells.Length} cells; the table has {_columns.Count} columns.", nameof(cells));
        }

        _rows.Add([.. cells.Select(cell => string.IsNullOrEmpty(cell) ? Empty : cell)]);
        return this;
    }

    public void WriteTo(TextWriter writer, bool color)
    {
        int[] widths = [.. _columns.Select((column, i) => _rows.Select(row => row[i].Length).Prepend(column.Header.Length).Max())];
        WriteLine(writer, [.. _columns.Select(column => column.Header)], widths, text => Ansi.Bold(text, color));
        foreach (string[] row in _rows)
        {
            WriteLine(writer, row, widths, text => text);
        }
    }

    private void WriteLine(TextWriter writer, string[] cells, int[] widths, Func<string, string> style)
    {
        var line = new System.Text.StringBuilder();
        for (int i = 0; i < cells.Length; i++)
        {
            bool last = i == cells.Length - 1;
            string cell = cells[i];
            int padding = widths[i] - cell.Length;
            if (_columns[i].AlignRight)
            {
                line.Append(' ', padding).Append(style(cell));
            }
            else
            {
                line.Append(style(cell));
                if (!last)
                {
                    line.Append(' ', padding);
                }
            }

            if (!last)
            {
                line.Append(Gap);
            }
        }

        writer.WriteLine(line.ToString());
    }
}
