namespace Orchestrator.Grains.Fleet;

/// <summary>
/// The fleet grain's side of the compliance gauges (see <see cref="ComplianceMetrics"/> for who reports and why):
/// this activation publishes a snapshot when it activates, on a timer, and whenever compliance is asked for, and
/// withdraws it when it deactivates.
/// </summary>
internal sealed partial class FleetGrain
{
    private string FleetId => clusterOptions.Value.ServiceId;

    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        await MigrateIndexAsync(cancellationToken);

        // Statuses change with time alone (a backup ages past its RPO), not only with calls: recompute on a timer.
        // KeepAlive: hosts no longer call this grain on every inventory sync (they report to their own index shard),
        // so without it the activation would go idle and the gauges would vanish. Interleaved: the tick waits for
        // the hosts' shards (counts only) and must not hold up the registries' calls meanwhile; it only reads them.
        this.RegisterGrainTimer(
            static (grain, _) => grain.RefreshComplianceMetricsAsync(),
            this,
            new GrainTimerCreationOptions(TimeSpan.Zero, policyOptions.Value.ComplianceMetricsInterval) { Interleave = true, KeepAlive = true });
    }

    public override Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        ComplianceMetrics.Withdraw(this, FleetId);
        return Task.CompletedTask;
    }
}
