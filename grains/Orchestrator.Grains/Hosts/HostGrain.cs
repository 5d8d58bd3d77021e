using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orchestrator.Grains.Fleet;
using Orchestrator.Grains.Placement;
using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.Hosts;

[HostAffinePlacement]
internal sealed partial class HostGrain(
    [PersistentState("host", StorageNames.Default)] IPersistentState<HostState> state,
    IHypervisor hypervisor,
    ILocalSiloDetails silo,
    TimeProvider time,
    IOptions<FleetIndexOptions> indexOptions,
    ILogger<HostGrain> logger) : Grain, IHostGrain
{
    private string Name => this.GetPrimaryKeyString();

    private int FanOut => indexOptions.Value.InventoryFanOut;

    public async Task<HostView> SyncInventoryAsync(CancellationToken cancellationToken = default)
    {
        using var activity = Telemetry.Source.StartActivity("host.sync");
        activity?.SetTag("host", Name);
        var now = time.GetUtcNow();
        try
        {
            var facts = await hypervisor.GetFactsAsync(cancellationToken);
            var domains = await hypervisor.ListDomainsAsync(cancellationToken);
            // One bad domain name or one VM whose grain cannot work (e.g. a state row that cannot be read) affects
            // that VM only: it is skipped with the reason logged, and every other VM is still synced.
            // At most Orchestrator:FleetIndex:InventoryFanOut VM grains at a time: a host of thousands of VMs (and a
            // silo's first sync, which activates them all) must not put thousands of calls in flight at once.
            // A test restore's throwaway VM (orch-test-*) lives for one test: it is not inventory, nor any policy's.
            var valid = domains.Where(d => IsValidName(d.Name) && !d.Name.StartsWith(TestRestoreRequest.ThrowawayPrefix, StringComparison.Ordinal)).ToList();
            var applied = await BoundedFanOut.RunAsync(valid, FanOut, d => ForOneVmAsync(d.Name, async vm => (VmView?)await vm.ApplyInventoryAsync(Inventory.From(d, now), cancellationToken)));

            var present = valid.Select(d => d.Name).ToHashSet(StringComparer.Ordinal);
            var vanished = state.State.Vms.Where(vm => !present.Contains(vm)).ToList();
            var absent = await BoundedFanOut.RunAsync(vanished, FanOut, name => ForOneVmAsync(name, vm => vm.MarkAbsentAsync(now, cancellationToken)));

            var known = state.State.Vms.Union(present, StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();
            var firstSync = state.State.LastSync is null || state.State.Uri != facts.Uri;
            if (firstSync)
            {
                // Before this sync is recorded: a registration that fails is tried again by the next sync.
                await GrainFactory.GetGrain<IFleetGrain>(GrainKeys.Fleet).RegisterHostAsync(Name, facts.Uri, cancellationToken);
            }

            // This host's slice of the fleet's VM index (policy selection and compliance work from it, also while this
            // host is down), from the records the VMs returned above. Not the fleet grain: it is on no per-sync path.
            await GrainFactory.GetGrain<IHostIndexGrain>(Name).ReportInventoryAsync(
                [.. applied.OfType<VmView>().Concat(absent.OfType<VmView>()).Select(v => new VmIndexEntry(Name, v.Name, v.Uuid, v.Present, v.Labels, v.LastBackupAt, v.LastCheckpointAt))],
                cancellationToken);

            state.State.Uri = facts.Uri;
            state.State.Driver = facts.DriverName;
            state.State.LibvirtVersion = facts.LibvirtVersion;
            state.State.HypervisorVersion = facts.HypervisorVersion;
            state.State.LastSync = now;
            state.State.LastSyncError = null;
            state.State.Vms = known;
            await state.WriteStateAsync(cancellationToken);

            activity?.SetTag("vms", domains.Count);
            LogSynced(logger, Name, domains.Count, vanished.Count);
        }
        catch (HypervisorException e)
        {
            activity?.SetStatus(System.Diagnostics.ActivityStatusCode.Error, e.Message);
            LogSyncFailed(logger, Name, e.Message);
            state.State.LastSyncError = e.Message;
            await state.WriteStateAsync(cancellationToken);
            throw new OrchestratorException(ErrorCode.Internal, $"inventory sync of host '{Name}' failed: {e.Message}", host: Name);
        }

        return View();
    }

    private bool IsValidName(string vm)
    {
        try
        {
            GrainKeys.ValidateVmName(vm, "domain name");
            return true;
        }
        catch (OrchestratorException)
        {
            LogVmSkipped(logger, Name, Quote(vm), "not a valid VM name (no '/', no control characters, no surrounding spaces, at most 200 characters)");
            return false;
        }
    }

    private async Task<VmView?> ForOneVmAsync(string vm, Func<IVirtualMachineGrain, Task<VmView?>> call)
    {
        try
        {
            return await call(GrainFactory.GetGrain<IVirtualMachineGrain>(GrainKeys.Vm(Name, vm)));
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            LogVmSkipped(logger, Name, Quote(vm), e.Message.Length > 500 ? e.Message[..500] + "..." : e.Message);
            return null;
        }
    }

    /// <summary>A domain name as logged: at most 80 characters, control characters escaped.</summary>
    private static string Quote(string name)
    {
        var shown = name.Length > 80 ? name[..80] + "..." : name;
        return string.Concat(shown.Select(c => char.IsControl(c) ? $"\\u{(int)c:x4}" : c.ToString()));
    }

    public Task<HostView> GetAsync(CancellationToken cancellationToken = default) => Task.FromResult(View());

    public async Task<IReadOnlyList<VmView>> ListVmsAsync(CancellationToken cancellationToken = default)
    {
        return await BoundedFanOut.RunAsync(state.State.Vms, FanOut, vm => GrainFactory.GetGrain<IVirtualMachineGrain>(GrainKeys.Vm(Name, vm)).GetAsync(cancellationToken));
    }

    private HostView View() => new(
        Name,
        state.State.Uri,
        state.State.Driver,
        state.State.LibvirtVersion,
        state.State.HypervisorVersion,
        state.State.Vms.Count,
        state.State.LastSync,
        state.State.LastSyncError,
        silo.SiloAddress.ToParsableString());
}
