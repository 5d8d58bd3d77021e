namespace Orchestrator.Grains.Policies;

/// <summary>How policy runs behave (section Orchestrator:Policies).</summary>
public sealed class PolicyOptions
{
    /// <summary>How often a policy with skipped VMs looks for their hosts to come back.</summary>
    public TimeSpan RetryInterval { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>How often a running policy run re-tries admission of waiting VMs.</summary>
    public TimeSpan AdmissionInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>How long a VM's workflow may stay unreachable while its host's silo still counts as alive, before the VM is skipped.</summary>
    public TimeSpan UnreachableGrace { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>How long a VM busy with another operation (Conflict) is waited for before the target fails.</summary>
    public TimeSpan BusyWait { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>Finished runs each policy keeps.</summary>
    public int RunHistoryLimit { get; set; } = 50;

    /// <summary>How often the fleet grain recomputes the compliance numbers its gauges report (also on every compliance query).</summary>
    public TimeSpan ComplianceMetricsInterval { get; set; } = TimeSpan.FromSeconds(30);
}
