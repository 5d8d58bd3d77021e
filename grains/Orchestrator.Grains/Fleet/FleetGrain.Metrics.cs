namespace Orchestrator.Grains.Fleet;

/// <summary>
/// The fleet grain's side of the compliance gauges (see <see cref="ComplianceMetrics"/> for who reports and why):
/// this activation publishes a snapshot when it activates, on a timer, and whenever compliance is asked for, and
/// withdraws it when it deactivates.
/// </summary>
internal sealed partial class FleetGrain
{
    private string FleetId => clusterOptions.Value.ServiceId;

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        // Statuses change with time alone (a backup ages past its RPO), not only with calls: recompute on a timer.
        // Not KeepAlive: every host's inventory sync calls this grain (Orchestrator:InventorySyncInterval), and an
        // activation that goes idle anyway withdraws its numbers rather than reporting stale ones.
        this.RegisterGrainTimer(
            static (grain, _) => grain.RefreshComplianceMetrics(),
            this,
            new GrainTimerCreationOptions(TimeSpan.Zero, policyOptions.Value.ComplianceMetricsInterval) { Interleave = false, KeepAlive = false });
        return Task.CompletedTask;
    }

    public override Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        ComplianceMetrics.Withdraw(this, FleetId);
        return Task.CompletedTask;
    }

    private Task RefreshComplianceMetrics()
    {
        PublishCompliance(ComputeCompliance(time.GetUtcNow()));
        return Task.CompletedTask;
    }

    private void PublishCompliance(IReadOnlyList<VmCompliance> compliance) =>
        ComplianceMetrics.Publish(this, FleetId, state.State.Policies.Keys, compliance);
}
