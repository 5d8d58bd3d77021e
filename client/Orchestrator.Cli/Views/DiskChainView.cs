using System.Globalization;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Output;

namespace Orchestrator.Cli.Views;

/// <summary>A disk's backing chain as <c>chain show</c> prints it. The JSON shape is documented in README.md.</summary>
internal sealed record DiskChainView(
    string Key,
    string Host,
    string Vm,
    string Target,
    IReadOnlyList<ChainLayerView> Layers,
    DateTime? LastReconciled)
{
    /// <summary>Layers ordered by depth: the active (top) image first, the base last.</summary>
    public static DiskChainView From(DiskChain chain) => new(
        chain.Key,
        chain.Host,
        chain.Vm,
        chain.Target,
        [.. chain.Layers.Select(ChainLayerView.From).OrderBy(l => l.Depth)],
        Timestamps.ToUtc(chain.LastReconciled));

    public static void WriteDetails(DiskChainView chain, TextWriter writer, bool color)
    {
        new PropertyListWriter()
            .Add("Key", chain.Key)
            .Add("Host", chain.Host)
            .Add("VM", chain.Vm)
            .Add("Disk", chain.Target)
            .Add("Layers", chain.Layers.Count.ToString(CultureInfo.InvariantCulture))
            .Add("Last reconciled", TextFormat.Timestamp(chain.LastReconciled))
            .WriteTo(writer, color);
        writer.WriteLine();
        if (chain.Layers.Count == 0)
        {
            writer.WriteLine("No layers.");
            return;
        }

        var table = new TableWriter(
            new TableColumn("DEPTH", AlignRight: true),
            new TableColumn("FORMAT"),
            new TableColumn("ROLE"),
            new TableColumn("PATH"));
        for (int i = 0; i < chain.Layers.Count; i++)
        {
            ChainLayerView layer = chain.Layers[i];
            string role = i == 0 ? "active" : i == chain.Layers.Count - 1 ? "base" : "backing";
            table.AddRow(layer.Depth.ToString(CultureInfo.InvariantCulture), layer.Format, role, layer.Path);
        }

        table.WriteTo(writer, color);
    }
}
