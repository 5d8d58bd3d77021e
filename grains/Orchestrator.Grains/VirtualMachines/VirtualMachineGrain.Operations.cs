using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.VirtualMachines;

/// <summary>The one-operation-at-a-time lock and helpers shared by backups and checkpoints.</summary>
internal sealed partial class VirtualMachineGrain
{
    /// <summary>The libvirt domain name of this VM.</summary>
    private string DomainName => Key.Vm;

    private string VmKey => this.GetPrimaryKeyString();

    /// <summary>
    /// Takes the VM's operation lock (persisted) or refuses with a Conflict that says what is running.
    /// Callers release it with <see cref="EndOperationAsync"/> in a finally.
    /// </summary>
    /// <remarks>
    /// With <paramref name="persist"/> false the lock holds in this activation only, until the caller's next write
    /// stores it (a backup stores it with its run): for an operation whose steps before that write touch nothing.
    /// </remarks>
    private async Task BeginOperationAsync(string kind, string id, CancellationToken cancellationToken, bool persist = true)
    {
        await LearnFromHostAsync(cancellationToken);
        RequireKnown();
        ThrowIfBusy(id);
        state.State.Operation = new VmOperation { Kind = kind, Id = id, StartedAt = time.GetUtcNow() };
        if (persist)
        {
            await _writes.WriteAsync(cancellationToken);
        }
    }

    private async Task EndOperationAsync(string id, CancellationToken cancellationToken)
    {
        if (state.State.Operation?.Id == id)
        {
            state.State.Operation = null;
            await _writes.WriteAsync(cancellationToken);
        }
    }

    /// <summary>Conflict (reason VM_BUSY) when an operation other than <paramref name="id"/> holds the VM's lock.</summary>
    private void ThrowIfBusy(string? id = null)
    {
        if (state.State.Operation is { } running && running.Id != id)
        {
            throw new OrchestratorException(
                ErrorCode.Conflict,
                $"VM '{VmKey}' is busy: {running.Kind} '{running.Id}' has been running since {running.StartedAt:u}; one operation at a time",
                reason: "VM_BUSY");
        }
    }

    /// <summary>
    /// A VM that no inventory sync has shown yet (its host's silo just started, or it was defined a moment ago) is
    /// looked up on the host itself before an operation is refused: the first sync need not have run.
    /// </summary>
    private async Task LearnFromHostAsync(CancellationToken cancellationToken)
    {
        if (state.State.Known)
        {
            return;
        }

        DomainInfo domain;
        try
        {
            domain = await hypervisor.GetDomainAsync(DomainName, cancellationToken);
        }
        catch (HypervisorException)
        {
            // Not on the host (or the host cannot say now): the operation is refused as before, as not known.
            return;
        }

        await ApplyInventoryAsync(Hosts.Inventory.From(domain, time.GetUtcNow()), cancellationToken);
    }

    private void RequireKnown()
    {
        if (!state.State.Known)
        {
            throw OrchestratorException.NotFound($"VM '{VmKey}' is not known (no inventory of its host has seen it)");
        }
    }

    /// <summary>Runs a mutating hypervisor call under the host-local fence for this VM.</summary>
    private async Task<T> FencedAsync<T>(Func<IHypervisor, Task<T>> action, CancellationToken cancellationToken)
    {
        using var _ = await fence.AcquireAsync(VmKey, cancellationToken);
        return await action(hypervisor);
    }

    private async Task FencedAsync(Func<IHypervisor, Task> action, CancellationToken cancellationToken)
    {
        using var _ = await fence.AcquireAsync(VmKey, cancellationToken);
        await action(hypervisor);
    }
}
