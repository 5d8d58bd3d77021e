using Microsoft.Extensions.DependencyInjection;
using Orchestrator.Grains;
using Orchestrator.Grains.Policies;
using Orchestrator.UnitTests.Cluster;
using Orleans.Storage;

namespace Orchestrator.UnitTests.Policies;

/// <summary>
/// The three-host cluster plus a late host, kvm-09, whose silo a test starts (its VMs are in the fleet index
/// before that, as for a host whose silo is down). Policy retries, admission and the compliance gauges tick fast.
/// </summary>
public sealed class PolicyClusterFixture : ThreeHostClusterFixture
{
    public const string LateHost = "kvm-09";

    public const int MaxConcurrentPerSilo = 8;

    protected override IReadOnlyList<string> LateHosts => [LateHost];

    protected override void ConfigureSilo(ISiloBuilder silo)
    {
        // Trace context crosses silos as in the real silo (policy run -> VM workflows on other hosts).
        silo.AddActivityPropagation();
        silo.Services.Configure<PolicyOptions>(o =>
        {
            o.RetryInterval = TimeSpan.FromMilliseconds(500);
            o.CheckpointInterval = TimeSpan.FromSeconds(3);
            o.UnreachableGrace = TimeSpan.FromSeconds(5);
            o.ComplianceMetricsInterval = TimeSpan.FromMilliseconds(200);
        });
        // Few backup slots, so a part's in-flight cap (twice the slots: 16) is below a wide-open budget in a small test.
        silo.Services.Configure<Orchestrator.Grains.Backups.BackupOptions>(o => o.MaxConcurrentPerSilo = MaxConcurrentPerSilo);
        silo.AddIncomingGrainCallFilter(PartReportFaults.FilterAsync);
        silo.Services.AddKeyedSingleton<IGrainStorage>(
            StorageNames.Default,
            (services, _) => new CountingGrainStorage(Orleans.Storage.MemoryGrainStorageFactory.Create(services, StorageNames.Default)));
    }
}

/// <summary>
/// Makes the policy grain (a run's coordinator) refuse the reports of its per-host parts, as when its silo has just
/// died and the call is lost: every ReportPart fails with a transport error until cleared.
/// </summary>
public static class PartReportFaults
{
    private static volatile string[] _policies = [];

    public static void Fail(params string[] policies) => _policies = policies;

    public static void Clear() => _policies = [];

    internal static Task FilterAsync(IIncomingGrainCallContext context)
    {
        if (context.Grain is IPolicyRunCoordinator
            && context.MethodName == nameof(IPolicyRunCoordinator.ReportPartAsync)
            && _policies.Contains(context.TargetId.Key.ToString()))
        {
            throw new TimeoutException($"injected: {context.MethodName} lost on its way to the policy grain");
        }

        return context.Invoke();
    }
}

/// <summary>Counts grain state writes by state name and grain key, around the silo's real (memory) storage.</summary>
public sealed class CountingGrainStorage(IGrainStorage inner) : IGrainStorage
{
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<(string State, string Key), int> Writes = new();

    /// <summary>Writes so far of the named states of grains whose key satisfies <paramref name="key"/>.</summary>
    public static int Count(IReadOnlyCollection<string> states, Func<string, bool> key) =>
        Writes.Where(w => states.Contains(w.Key.State) && key(w.Key.Key)).Sum(w => w.Value);

    public Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) => inner.ReadStateAsync(stateName, grainId, grainState);

    public Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        Writes.AddOrUpdate((stateName, grainId.Key.ToString()!), 1, (_, n) => n + 1);
        return inner.WriteStateAsync(stateName, grainId, grainState);
    }

    public Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) => inner.ClearStateAsync(stateName, grainId, grainState);
}

[CollectionDefinition(Name)]
public sealed class PolicyClusterCollection : ICollectionFixture<PolicyClusterFixture>
{
    public const string Name = "policy cluster";
}
