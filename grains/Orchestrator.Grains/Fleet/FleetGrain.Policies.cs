using Orchestrator.Grains.Policies;

namespace Orchestrator.Grains.Fleet;

/// <summary>
/// The fleet's side of policies: the policy registry and admission slots (the VM index and compliance are in
/// FleetGrain.Index.cs, assembled from the hosts' index shards).
/// </summary>
internal sealed partial class FleetGrain
{
    /// <summary>A slot older than this belongs to a run that is gone (its policy grain lost it): it no longer counts.</summary>
    internal static readonly TimeSpan LeaseLifetime = TimeSpan.FromHours(48);

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

    public async Task<AdmissionResult> TryAdmitAsync(AdmissionRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var leases = state.State.Leases;
        var key = GrainKeys.Vm(request.Host, request.Vm);
        var now = time.GetUtcNow();
        var stale = leases
            .Where(l => now - l.Value.At > LeaseLifetime || IsStale(l.Key, l.Value, request, key))
            .Select(l => l.Key)
            .ToList();
        stale.ForEach(k => leases.Remove(k));
        var changed = stale.Count > 0;

        if (leases.TryGetValue(key, out var held))
        {
            return await AnswerAsync(held.RunId == request.RunId
                ? new AdmissionResult(true, null)
                : new AdmissionResult(false, $"waiting: VM busy in run {held.RunId} of policy '{held.Policy}'"));
        }

        var mine = leases.Values.Where(l => l.Policy == request.Policy).ToList();
        if (mine.Count(l => l.Host == request.Host) >= request.Limits.PerHost)
        {
            return await AnswerAsync(new AdmissionResult(false, $"waiting: host {request.Host} has {request.Limits.PerHost} of this policy's VMs running (concurrency.per_host)"));
        }

        if (mine.Count >= request.Limits.Fleet)
        {
            return await AnswerAsync(new AdmissionResult(false, $"waiting: {request.Limits.Fleet} of this policy's VMs running fleet-wide (concurrency.fleet)"));
        }

        leases[key] = new AdmissionLease { Policy = request.Policy, RunId = request.RunId, Host = request.Host, At = now };
        changed = true;
        return await AnswerAsync(new AdmissionResult(true, null));

        async Task<AdmissionResult> AnswerAsync(AdmissionResult result)
        {
            if (changed)
            {
                await state.WriteStateAsync(cancellationToken);
            }

            return result;
        }
    }

    /// <summary>
    /// A slot of the asking policy that the asking run no longer holds: one left by an earlier run of the policy
    /// (a policy runs one run at a time) or one of this run whose VM ended while its release was lost.
    /// </summary>
    private static bool IsStale(string key, AdmissionLease lease, AdmissionRequest request, string requested) =>
        lease.Policy == request.Policy
        && (lease.RunId != request.RunId
            || (request.Holding is { } holding && key != requested && !holding.Contains(key, StringComparer.Ordinal)));

    public async Task ReleaseAsync(string runId, string host, string vm, CancellationToken cancellationToken = default)
    {
        var key = GrainKeys.Vm(host, vm);
        if (state.State.Leases.TryGetValue(key, out var held) && held.RunId == runId)
        {
            state.State.Leases.Remove(key);
            await state.WriteStateAsync(cancellationToken);
        }
    }

    public async Task ReleaseRunAsync(string runId, CancellationToken cancellationToken = default)
    {
        var keys = state.State.Leases.Where(l => l.Value.RunId == runId).Select(l => l.Key).ToList();
        if (keys.Count > 0)
        {
            keys.ForEach(k => state.State.Leases.Remove(k));
            await state.WriteStateAsync(cancellationToken);
        }
    }
}
