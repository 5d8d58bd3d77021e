using Orchestrator.Grains.Placement;

namespace Orchestrator.Grains.Disks;

[HostAffinePlacement]
internal sealed class DiskChainGrain(
    [PersistentState("chain", StorageNames.Default)] IPersistentState<DiskChainState> state) : Grain, IDiskChainGrain
{
    private DateTimeOffset _lastReconciled;

    /// <summary>The chain as last seen when its top layers were a backup's overlays (not stored), else null.</summary>
    private List<ChainLayerRecord>? _seenLayers;

    public Task<DiskChainView> GetAsync(CancellationToken cancellationToken = default)
    {
        if (!state.State.Known)
        {
            DeactivateOnIdle();
            throw OrchestratorException.NotFound($"disk '{this.GetPrimaryKeyString()}' is not known (no inventory of its host has seen it)");
        }

        var (host, vm, disk) = GrainKeys.ParseDisk(this.GetPrimaryKeyString());
        return Task.FromResult(new DiskChainView(
            host,
            vm,
            disk,
            [.. (_seenLayers ?? state.State.Layers).Select(l => new ChainLayerView(l.Path, l.Format))],
            _lastReconciled == default ? state.State.LastChanged : _lastReconciled));
    }

    public async Task ReconcileAsync(DiskInventory inventory, DateTimeOffset at, int transientLayers, CancellationToken cancellationToken = default)
    {
        _lastReconciled = at;
        var seen = inventory.Layers.Select(l => new ChainLayerRecord { Path = l.Path, Format = l.Format }).ToList();
        var layers = transientLayers > 0 && seen.Count > transientLayers ? seen.GetRange(transientLayers, seen.Count - transientLayers) : seen;
        _seenLayers = ReferenceEquals(layers, seen) ? null : seen;
        if (!state.State.Known || !state.State.Layers.SequenceEqual(layers))
        {
            state.State.Known = true;
            state.State.Layers = layers;
            state.State.LastChanged = at;
            await state.WriteStateAsync(cancellationToken);
        }
    }
}
