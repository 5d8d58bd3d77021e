namespace Orchestrator.Cli.Output;

/// <summary>The "show" layout for people: one "Label:  value" line per property, values aligned.</summary>
internal sealed class PropertyListWriter
{
    private readonly List<(string Label, string Value)> _properties = [];

    /// <summary>Adds the property only when it has a value (an optional line that older output did not have).</summary>
    public PropertyListWriter AddIf(string label, string? value) => value is null ? this : Add(label, value);

    public PropertyListWriter Add(string label, string? value)
    {
        _properties.Add((label, string.IsNullOrEmpty(value) ? TableWriter.Empty : value));
        return this;
    }

    public void WriteTo(TextWriter writer, bool color)
    {
        int width = _properties.Count == 0 ? 0 : _properties.Max(p => p.Label.Length) + 1;
        foreach ((string label, string value) in _properties)
        {
            string padded = (label + ":").PadRight(width);
            writer.WriteLine($"{Ansi.Bold(padded, color)}  {value}");
        }
    }
}
