using Orchestrator.Grains.Placement;

namespace Orchestrator.Grains.Disks;

[HostAffinePlacement]
internal sealed class DiskChainGrain(
    [PersistentState("chain", StorageNames.Default)] IPersistentState<DiskChainState> state) : Grain, IDiskChainGrain
{
    private DateTimeOffset _lastReconciled;

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
            [.. state.State.Layers.Select(l => new ChainLayerView(l.Path, l.Format))],
            _lastReconciled == default ? state.State.LastChanged : _lastReconciled));
    }

    public async Task ReconcileAsync(DiskInventory inventory, DateTimeOffset at, CancellationToken cancellationToken = default)
    {
        _lastReconciled = at;
        var layers = inventory.Layers.Select(l => new ChainLayerRecord { Path = l.Path, Format = l.Format }).ToList();
        if (!state.State.Known || !state.State.Layers.SequenceEqual(layers))
        {
            state.State.Known = true;
            state.State.Layers = layers;
            state.State.LastChanged = at;
            await state.WriteStateAsync(cancellationToken);
        }
    }
}
