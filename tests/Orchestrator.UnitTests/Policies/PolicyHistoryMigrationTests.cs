using Microsoft.Extensions.DependencyInjection;
using Orchestrator.Grains.Policies;

namespace Orchestrator.UnitTests.Policies;

/// <summary>Runs stored in the policy's hot state by the code before the history had its own state.</summary>
[Collection(PolicyClusterCollection.Name)]
public sealed class PolicyHistoryMigrationTests(PolicyClusterFixture fixture)
{
    [Fact]
    public async Task Activate_FinishedRunsInTheHotState_MovedToTheHistoryListedWithTheirVms_HotStateWithoutThem()
    {
        const string Name = "legacy-runs";
        var policy = fixture.Grains.GetGrain<IBackupPolicyGrain>(Name);
        var spec = PolicySpecRecord.From(new PolicySpec { Name = Name, Kind = PolicyKind.Checkpoint, Selector = new PolicySelector { Vms = ["nobody-*"] } });
        var now = DateTimeOffset.UtcNow;
        PolicyRunRecord Finished(string runId, int daysAgo, string vm) => new()
        {
            RunId = runId,
            PolicyVersion = 1,
            Spec = spec,
            State = PolicyRunState.Completed,
            StartedAt = now.AddDays(-daysAgo),
            EndedAt = now.AddDays(-daysAgo).AddMinutes(1),
            Version = 5,
            Targets = [new PolicyTargetRecord { Host = "kvm-01", Vm = vm, Status = PolicyTargetStatus.Succeeded, Checkpoint = $"pol-{Name}-{daysAgo}" }],
        };
        var old = new BackupPolicyState
        {
            Exists = true,
            Spec = spec,
            Version = 1,
            CreatedAt = now.AddDays(-3),
            UpdatedAt = now.AddDays(-3),
            LegacyRuns = [Finished("p-20261204-000000-0ld002", 2, "vm-a"), Finished("p-20261205-000000-0ld001", 1, "vm-b")],
        };
        var storage = fixture.Cluster.Silos[0].SiloHost.Services.GetRequiredKeyedService<Orleans.Storage.IGrainStorage>(Grains.StorageNames.Default);
        var id = policy.GetGrainId();
        await storage.WriteStateAsync("policy", id, new Orleans.GrainState<BackupPolicyState>(old));

        var runs = await policy.ListRunsAsync();
        var hot = new Orleans.GrainState<BackupPolicyState>(new BackupPolicyState());
        await storage.ReadStateAsync("policy", id, hot);
        var history = new Orleans.GrainState<PolicyRunHistoryState>(new PolicyRunHistoryState());
        await storage.ReadStateAsync("policy-runs", id, history);

        Assert.Equal(["p-20261205-000000-0ld001", "p-20261204-000000-0ld002"], runs.Select(r => r.RunId));
        Assert.Equal("vm-b", Assert.Single(runs[0].Targets).Vm);
        Assert.Equal("pol-legacy-runs-2", Assert.Single(runs[1].Targets).Checkpoint);
        Assert.Empty(hot.State!.LegacyRuns);
        Assert.True(hot.State.Exists);
        Assert.Null(hot.State.ActiveRun);
        Assert.Equal(["p-20261204-000000-0ld002", "p-20261205-000000-0ld001"], history.State!.Runs.Select(r => r.RunId));
        Assert.Equal("p-20261205-000000-0ld001", (await policy.GetAsync()).LastRun?.RunId);
    }
}
