using Orchestrator.Api.V1;

namespace Orchestrator.Cli.Views;

/// <summary>One image of a backing chain, inside <see cref="DiskChainView"/>. Depth 0 is the active image.</summary>
internal sealed record ChainLayerView(int Depth, string Path, string Format)
{
    public static ChainLayerView From(ChainLayer layer) => new(layer.Depth, layer.Path, layer.Format);
}
