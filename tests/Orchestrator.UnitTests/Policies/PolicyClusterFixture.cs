using Microsoft.Extensions.DependencyInjection;
using Orchestrator.Grains.Policies;
using Orchestrator.UnitTests.Cluster;

namespace Orchestrator.UnitTests.Policies;

/// <summary>
/// The three-host cluster plus a late host, kvm-09, whose silo a test starts (its VMs are in the fleet index
/// before that, as for a host whose silo is down). Policy retries, admission and the compliance gauges tick fast.
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
            o.ComplianceMetricsInterval = TimeSpan.FromMilliseconds(200);
        });
        silo.AddIncomingGrainCallFilter(FleetReleaseFaults.FilterAsync);
    }
}

/// <summary>
/// Makes the fleet grain refuse slot releases, as when its silo has just died and the call is lost: the release of
/// chosen VMs and of chosen whole runs fails with a transport error until cleared.
/// </summary>
public static class FleetReleaseFaults
{
    private static volatile string[] _vms = [];
    private static volatile string[] _runs = [];

    public static void Fail(IEnumerable<string> vms, IEnumerable<string> runs)
    {
        _vms = [.. vms];
        _runs = [.. runs];
    }

    public static void Clear() => Fail([], []);

    internal static Task FilterAsync(IIncomingGrainCallContext context)
    {
        if (context.Grain is IFleetGrain)
        {
            var lost = context.MethodName switch
            {
                nameof(IFleetGrain.ReleaseAsync) => _vms.Contains(context.Request.GetArgument(2) as string),
                nameof(IFleetGrain.ReleaseRunAsync) => _runs.Contains(context.Request.GetArgument(0) as string),
                _ => false,
            };
            if (lost)
            {
                throw new TimeoutException($"injected: {context.MethodName} lost on its way to the fleet grain");
            }
        }

        return context.Invoke();
    }
}

[CollectionDefinition(Name)]
public sealed class PolicyClusterCollection : ICollectionFixture<PolicyClusterFixture>
{
    public const string Name = "policy cluster";
}
