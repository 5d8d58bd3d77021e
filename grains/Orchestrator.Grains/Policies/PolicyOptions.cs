namespace Orchestrator.Grains.Policies;

/// <summary>How policy runs behave (section Orchestrator:Policies).</summary>
public sealed class PolicyOptions
{
    /// <summary>How often a policy with skipped VMs looks for their hosts to come back.</summary>
    public TimeSpan RetryInterval { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>Retired: admission is event-driven now (a VM starts when another ends). Still bound and validated so existing settings load.</summary>
    public TimeSpan AdmissionInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// How often a policy-host part of a run may checkpoint its VMs' progress (only when something changed) and hand
    /// unneeded budget back to the coordinator: the bound on a run's writes between its start and its end.
    /// </summary>
    public TimeSpan CheckpointInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>How long a VM's workflow may stay unreachable while its host's silo still counts as alive, before the VM is skipped.</summary>
    public TimeSpan UnreachableGrace { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>How long a VM busy with another operation (Conflict) is waited for before the target fails.</summary>
    public TimeSpan BusyWait { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>Finished runs each policy keeps.</summary>
    public int RunHistoryLimit { get; set; } = 50;

    /// <summary>How often the fleet grain recomputes the compliance numbers its gauges report (also on every compliance query).</summary>
    public TimeSpan ComplianceMetricsInterval { get; set; } = TimeSpan.FromSeconds(30);
}
