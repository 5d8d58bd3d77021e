using Microsoft.Extensions.DependencyInjection;
using Orchestrator.Grains.Policies;
using Orchestrator.UnitTests.Cluster;

namespace Orchestrator.UnitTests.Policies;

/// <summary>
/// The three-host cluster plus a late host, kvm-09, whose silo a test starts (its VMs are in the fleet index
/// before that, as for a host whose silo is down). Policy retries and admission tick fast.
/// </summary>
public sealed class PolicyClusterFixture : ThreeHostClusterFixture
{
    public const string LateHost = "kvm-09";

    protected override IReadOnlyList<string> LateHosts => [LateHost];

    protected override void ConfigureSilo(ISiloBuilder silo)
    {
        // Trace context crosses silos as in the real silo (policy run -> VM workflows on other hosts).
        silo.AddActivityPropagation();
        silo.Services.Configure<PolicyOptions>(o =>
        {
            o.RetryInterval = TimeSpan.FromMilliseconds(500);
            o.AdmissionInterval = TimeSpan.FromMilliseconds(100);
            o.UnreachableGrace = TimeSpan.FromSeconds(5);
        });
    }
}

[CollectionDefinition(Name)]
public sealed class PolicyClusterCollection : ICollectionFixture<PolicyClusterFixture>
{
    public const string Name = "policy cluster";
}
