using Orchestrator.Grains.Policies;

namespace Orchestrator.Grains.Fleet;

/// <summary>
/// The fleet's side of policies: the policy registry (the VM index and compliance are in FleetGrain.Index.cs,
/// assembled from the hosts' index shards; admission budgets live in the policy runs' per-host parts).
/// </summary>
internal sealed partial class FleetGrain
{
    public async Task RegisterPolicyAsync(PolicyRegistration policy, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(policy);
        var name = PolicyNames.Validate(policy.Spec.Name);
        if (state.State.Policies.TryGetValue(name, out var existing) && existing.Version == policy.Version)
        {
            return;
        }

        state.State.Policies[name] = new PolicyRegistrationRecord { Spec = PolicySpecRecord.From(policy.Spec), Version = policy.Version };
        await state.WriteStateAsync(cancellationToken);
    }

    public async Task UnregisterPolicyAsync(string name, CancellationToken cancellationToken = default)
    {
        // Leases are retired (admission lives in the policy runs' parts now); a leftover one is dropped with its policy.
        var slots = state.State.Leases.Where(l => l.Value.Policy == name).Select(l => l.Key).ToList();
        slots.ForEach(k => state.State.Leases.Remove(k));
        if (state.State.Policies.Remove(name) || slots.Count > 0)
        {
            await state.WriteStateAsync(cancellationToken);
        }
    }

    public Task<IReadOnlyList<PolicyRegistration>> ListPoliciesAsync(CancellationToken cancellationToken = default) =>
        Task.FromResult<IReadOnlyList<PolicyRegistration>>([.. state.State.Policies
            .OrderBy(p => p.Key, StringComparer.Ordinal)
            .Select(p => new PolicyRegistration(p.Value.Spec.ToContract(), p.Value.Version))]);
}
