using Grpc.Core;
using Grpc.Net.Client;
using Orchestrator.Api.V1;
using Orchestrator.IntegrationTests.Infrastructure;

namespace Orchestrator.IntegrationTests.Silo;

/// <summary>
/// WatchPolicyRun over a real HTTP/2 transport with the generated client (not the server's code): a silo process in
/// embedded mode with its simulated demo host, one policy run followed by two watchers at once, one asking for changes
/// only and one as older clients do.
/// </summary>
public sealed class PolicyWatchGrpcTests : IAsyncLifetime
{
    private readonly SiloProcess _silo;
    private readonly string _backupRoot;

    public PolicyWatchGrpcTests()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"orchestrator-policy-watch-{Guid.NewGuid():N}");
        _backupRoot = Path.Combine(dir, "backups");
        _silo = new SiloProcess("demo-01", dir, new Dictionary<string, string>
        {
            ["Orchestrator__Backup__Roots__0"] = _backupRoot,
            ["Orchestrator__Backup__DefaultTarget"] = Path.Combine(_backupRoot, "demo-01"),
        });
    }

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(_backupRoot);
        _silo.Start();
        await _silo.WaitReadyAsync();
        await GrpcClients.Fleet(_silo.GrpcEndpoint).WaitForVmAsync("demo-01/web-1");
    }

    public async Task DisposeAsync()
    {
        await _silo.DisposeAsync();
        Directory.Delete(_silo.WorkDir, recursive: true);
    }

    [Fact]
    public async Task WatchPolicyRun_ChangesOnly_WholeRunFirstThenChanges_RebuildsTheRun_OldRequestStillGetsWholeRuns()
    {
        using var channel = GrpcChannel.ForAddress(_silo.GrpcEndpoint);
        var policies = new PolicyService.PolicyServiceClient(channel);
        await policies.ApplyPolicyAsync(new ApplyPolicyRequest
        {
            Spec = new PolicySpec
            {
                Name = "watch-grpc",
                Kind = PolicyKind.LiveBackup,
                Selector = new PolicySelector { Hosts = { "demo-01" } },
                Retention = new PolicyRetention { KeepLast = 2 },
                Concurrency = new PolicyConcurrency { PerHost = 1, Fleet = 1 },
            },
        });
        var run = (await policies.RunPolicyAsync(new RunPolicyRequest { Name = "watch-grpc" })).Run;
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));

        async Task<List<WatchPolicyRunResponse>> WatchAsync(bool changesOnly)
        {
            using var call = policies.WatchPolicyRun(new WatchPolicyRunRequest { Name = "watch-grpc", RunId = run.RunId, ChangesOnly = changesOnly }, cancellationToken: timeout.Token);
            var messages = new List<WatchPolicyRunResponse>();
            await foreach (var message in call.ResponseStream.ReadAllAsync(timeout.Token))
            {
                messages.Add(message);
            }

            return messages;
        }

        var watched = await Task.WhenAll(WatchAsync(changesOnly: true), WatchAsync(changesOnly: false));
        var (changes, whole) = (watched[0], watched[1]);
        var final = (await policies.GetPolicyRunAsync(new GetPolicyRunRequest { Name = "watch-grpc", RunId = run.RunId })).Run;

        // Whatever the demo host's VMs allow (a raw or stopped one may fail): the run ended, and both watchers saw how.
        Assert.NotEqual(PolicyRunState.Running, final.State);
        Assert.True(final.Targets.Count >= 2, $"the demo host has {final.Targets.Count} VMs");
        Assert.True(changes[0].Full);
        Assert.Equal(final.Targets.Count, changes[0].Run.Targets.Count);
        Assert.All(changes.Skip(1), m => Assert.False(m.Full));
        Assert.All(changes.Skip(1), m => Assert.True(m.Run.Targets.Count < final.Targets.Count || m.Run.State != PolicyRunState.Running));
        Assert.Equal(final.State, changes[^1].Run.State);
        Assert.Equal(
            (final.Targets.Count, final.Targets.Count(t => t.Status == PolicyTargetStatus.Succeeded)),
            (changes[^1].Counts.Total, changes[^1].Counts.Succeeded));
        var rebuilt = new Dictionary<string, PolicyTarget>(StringComparer.Ordinal);
        foreach (var message in changes)
        {
            foreach (var target in message.Run.Targets)
            {
                rebuilt[$"{target.Host}/{target.Vm}"] = target;
            }
        }

        Assert.Equal(final.Targets.ToDictionary(t => $"{t.Host}/{t.Vm}"), rebuilt);

        // A request without changes_only, as older clients send it: the whole run in every message.
        Assert.All(whole, m => Assert.Equal(final.Targets.Count, m.Run.Targets.Count));
        Assert.All(whole, m => Assert.True(m.Full));
        Assert.Equal(final.Targets, whole[^1].Run.Targets);
    }
}
