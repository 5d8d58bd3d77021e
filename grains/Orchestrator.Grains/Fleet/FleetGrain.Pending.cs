namespace Orchestrator.Grains.Fleet;

// TEMPORARY (replaced within this change): lets the API and CLI build against the new contracts.
internal sealed partial class FleetGrain
{
    public Task ReportInventoryAsync(string host, IReadOnlyList<VmIndexEntry> vms, CancellationToken cancellationToken = default) => throw new NotSupportedException();

    public Task RecordProtectionAsync(string host, string vm, PolicyKind kind, DateTimeOffset at, CancellationToken cancellationToken = default) => throw new NotSupportedException();

    public Task<IReadOnlyList<VmIndexEntry>> ListVmsAsync(CancellationToken cancellationToken = default) => throw new NotSupportedException();

    public Task<IReadOnlyList<VmIndexEntry>> SelectAsync(PolicySelector selector, CancellationToken cancellationToken = default) => throw new NotSupportedException();

    public Task RegisterPolicyAsync(PolicyRegistration policy, CancellationToken cancellationToken = default) => throw new NotSupportedException();

    public Task UnregisterPolicyAsync(string name, CancellationToken cancellationToken = default) => throw new NotSupportedException();

    public Task<IReadOnlyList<PolicyRegistration>> ListPoliciesAsync(CancellationToken cancellationToken = default) => throw new NotSupportedException();

    public Task<AdmissionResult> TryAdmitAsync(AdmissionRequest request, CancellationToken cancellationToken = default) => throw new NotSupportedException();

    public Task ReleaseAsync(string runId, string host, string vm, CancellationToken cancellationToken = default) => throw new NotSupportedException();

    public Task ReleaseRunAsync(string runId, CancellationToken cancellationToken = default) => throw new NotSupportedException();

    public Task<IReadOnlyList<VmCompliance>> GetComplianceAsync(CancellationToken cancellationToken = default) => throw new NotSupportedException();
}
