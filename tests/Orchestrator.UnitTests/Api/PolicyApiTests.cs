using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Orchestrator.Grains.Placement;
using Orchestrator.Hypervisor;
using Orchestrator.Silo.Services;
using Orchestrator.UnitTests.Policies;
using V1 = Orchestrator.Api.V1;

namespace Orchestrator.UnitTests.Api;

/// <summary>
/// The gRPC services of policies, compliance and overlays over the real grains of the simulated three-host cluster
/// (called in-process, without a transport): what reaches the grains and what comes back.
/// </summary>
[Collection(PolicyApiCollection.Name)]
public sealed class PolicyApiTests(PolicyClusterFixture fixture, Xunit.Abstractions.ITestOutputHelper output)
{
    private const long MiB = 1L << 20;

    /// <summary>Registered in the fleet but served by no silo: a host that is down.</summary>
    private const string DownHost = "kvm-77";

    private PolicyService Policies => new(fixture.Grains);

    private FleetService Fleet => new(
        fixture.Grains,
        fixture.SiloOf("kvm-01").ServiceProvider.GetRequiredService<IHostDirectory>(),
        TimeProvider.System,
        Microsoft.Extensions.Options.Options.Create(new Grains.Fleet.FleetIndexOptions()));

    private async Task AddVmAsync(string host, string name, string group)
    {
        fixture.Hypervisors[host].AddDomain(name, DomainPowerState.Running, [("vda", "qcow2", 64 * MiB)], new Dictionary<string, string> { ["group"] = group });
        await fixture.Grains.GetGrain<IHostGrain>(host).SyncInventoryAsync();
    }

    private V1.PolicySpec Spec(string name, string group) => new()
    {
        Name = name,
        Kind = V1.PolicyKind.LiveBackup,
        Selector = new V1.PolicySelector { Labels = { ["group"] = group } },
        Retention = new V1.PolicyRetention { KeepLast = 2 },
        Target = Path.Combine(fixture.BackupRoot, "{policy}", "{host}"),
        Rpo = Duration.FromTimeSpan(TimeSpan.FromHours(1)),
    };

    [Fact]
    public async Task ApplyPolicy_OnlySomeFieldsSent_StoresTheDefaults_SecondApplyIsUnchanged_ListAndGetShowIt()
    {
        var spec = Spec("api-apply", "api-apply");

        var created = await Policies.ApplyPolicy(new V1.ApplyPolicyRequest { Spec = spec }, new TestCallContext());
        var again = await Policies.ApplyPolicy(new V1.ApplyPolicyRequest { Spec = spec }, new TestCallContext());
        var got = await Policies.GetPolicy(new V1.GetPolicyRequest { Name = "api-apply" }, new TestCallContext());
        var listed = await Policies.ListPolicies(new V1.ListPoliciesRequest(), new TestCallContext());

        Assert.True(created.Created);
        Assert.Equal(1, created.Policy.Version);
        Assert.False(again.Created);
        Assert.False(again.Changed);
        Assert.Equal(1, again.Policy.Version);
        Assert.Equal(V1.QuiesceMode.Off, got.Policy.Spec.Quiesce);
        Assert.True(got.Policy.Spec.Verify);
        Assert.Equal((1, 4), (got.Policy.Spec.Concurrency.PerHost, got.Policy.Spec.Concurrency.Fleet));
        Assert.Equal(TimeSpan.FromHours(1), got.Policy.Spec.Rpo.ToTimeSpan());
        Assert.Contains("api-apply", listed.Policies.Select(p => p.Spec.Name));
        Assert.Equal(listed.Policies.Select(p => p.Spec.Name).Order(StringComparer.Ordinal), listed.Policies.Select(p => p.Spec.Name));
    }

    [Theory]
    [InlineData("schedule.cron")]
    [InlineData("concurrency.per_host")]
    [InlineData("kind")]
    public async Task ApplyPolicy_BadValue_InvalidArgumentNamingTheField_NothingStored(string field)
    {
        var spec = Spec("api-bad-" + field.Replace('.', '-').Replace('_', '-'), "api-bad");
        switch (field)
        {
            case "schedule.cron":
                spec.Schedule = new V1.PolicySchedule { Cron = "61 * * * *" };
                break;
            case "concurrency.per_host":
                // An explicit 0 must reach the validator, not turn into the default.
                spec.Concurrency = new V1.PolicyConcurrency { PerHost = 0 };
                break;
            default:
                spec.Kind = V1.PolicyKind.Unspecified;
                break;
        }

        var e = await Assert.ThrowsAsync<OrchestratorException>(() => Policies.ApplyPolicy(new V1.ApplyPolicyRequest { Spec = spec }, new TestCallContext()));

        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
        Assert.Equal(field, e.Field);
        var missing = await Assert.ThrowsAsync<OrchestratorException>(() => Policies.GetPolicy(new V1.GetPolicyRequest { Name = spec.Name }, new TestCallContext()));
        Assert.Equal(ErrorCode.NotFound, missing.Code);
    }

    /// <summary>
    /// The figure in the README: bytes a watcher is sent over one run of 1,002 VMs, the whole run per message (what
    /// older clients ask for) against changes only, both watching the same run at once.
    /// </summary>
    [Fact]
    public async Task WatchPolicyRun_1002Vms_ChangesOnlyRebuildsTheSameRunFromAFractionOfTheBytes()
    {
        foreach (var host in new[] { "kvm-01", "kvm-02", "kvm-03" })
        {
            for (var i = 0; i < 334; i++)
            {
                fixture.Hypervisors[host].AddDomain($"aw-{host}-{i:D3}", DomainPowerState.Running, [("vda", "qcow2", 4 * MiB)], new Dictionary<string, string> { ["group"] = "api-watch" });
            }

            await fixture.Grains.GetGrain<IHostGrain>(host).SyncInventoryAsync();
        }

        var spec = Spec("api-watch", "api-watch");
        spec.Concurrency = new V1.PolicyConcurrency { PerHost = 50, Fleet = 150 };
        await Policies.ApplyPolicy(new V1.ApplyPolicyRequest { Spec = spec }, new TestCallContext());
        var admitted = (await Policies.RunPolicy(new V1.RunPolicyRequest { Name = "api-watch" }, new TestCallContext())).Run;
        var whole = new ListWriter<V1.WatchPolicyRunResponse>();
        var changes = new ListWriter<V1.WatchPolicyRunResponse>();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(5));

        await Task.WhenAll(
            Policies.WatchPolicyRun(new V1.WatchPolicyRunRequest { Name = "api-watch", RunId = admitted.RunId }, whole, new TestCallContext(timeout.Token)),
            Policies.WatchPolicyRun(new V1.WatchPolicyRunRequest { Name = "api-watch", RunId = admitted.RunId, ChangesOnly = true }, changes, new TestCallContext(timeout.Token)));
        var final = (await Policies.GetPolicyRun(new V1.GetPolicyRunRequest { Name = "api-watch", RunId = admitted.RunId }, new TestCallContext())).Run;

        long wholeBytes = whole.Messages.Sum(m => (long)m.CalculateSize());
        long changeBytes = changes.Messages.Sum(m => (long)m.CalculateSize());
        output.WriteLine($"1,002 VMs, one run: whole run per message {whole.Messages.Count} messages, {wholeBytes:N0} bytes "
            + $"({wholeBytes / 1002.0:F0} B/VM); changes only {changes.Messages.Count} messages, {changeBytes:N0} bytes "
            + $"({changeBytes / 1002.0:F0} B/VM); {(double)wholeBytes / changeBytes:F1}x less");

        Assert.Equal(V1.PolicyRunState.Completed, final.State);
        Assert.Equal(1002, final.Targets.Count);
        Assert.All(whole.Messages, m => Assert.True(m.Full));
        Assert.True(changes.Messages[0].Full);
        Assert.Equal(1002, changes.Messages[0].Run.Targets.Count);
        Assert.All(changes.Messages.Skip(1), m => Assert.False(m.Full));
        Assert.Equal(V1.PolicyRunState.Completed, changes.Messages[^1].Run.State);
        Assert.Equal((1002, 1002), (changes.Messages[^1].Counts.Total, changes.Messages[^1].Counts.Succeeded));

        // Rebuilt from the changes, the run is the one the service shows.
        var rebuilt = new Dictionary<string, V1.PolicyTarget>(StringComparer.Ordinal);
        foreach (var message in changes.Messages)
        {
            foreach (var target in message.Run.Targets)
            {
                rebuilt[$"{target.Host}/{target.Vm}"] = target;
            }
        }

        Assert.Equal(final.Targets.ToDictionary(t => $"{t.Host}/{t.Vm}"), rebuilt);
        Assert.True(changeBytes * 5 < wholeBytes, $"changes only: {changeBytes} bytes; whole run per message: {wholeBytes} bytes");
    }

    [Fact]
    public async Task GetPolicy_MalformedName_InvalidArgumentOnName()
    {
        var e = await Assert.ThrowsAsync<OrchestratorException>(() => Policies.GetPolicy(new V1.GetPolicyRequest { Name = "Not/A/Name" }, new TestCallContext()));

        Assert.Equal("name", e.Field);
    }

    [Fact]
    public async Task RunPolicy_ThenWatch_StreamsSnapshotsUntilTheRunEnds_ThenRunsAndComplianceShowIt()
    {
        await AddVmAsync("kvm-01", "api-run-1", "api-run");
        await AddVmAsync("kvm-02", "api-run-2", "api-run");
        await Policies.ApplyPolicy(new V1.ApplyPolicyRequest { Spec = Spec("api-run", "api-run") }, new TestCallContext());
        var before = await Fleet.GetCompliance(new V1.GetComplianceRequest { Policy = "api-run" }, new TestCallContext());

        var admitted = (await Policies.RunPolicy(new V1.RunPolicyRequest { Name = "api-run" }, new TestCallContext())).Run;
        var stream = new ListWriter<V1.WatchPolicyRunResponse>();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await Policies.WatchPolicyRun(new V1.WatchPolicyRunRequest { Name = "api-run", RunId = admitted.RunId }, stream, new TestCallContext(timeout.Token));
        var runs = await Policies.ListPolicyRuns(new V1.ListPolicyRunsRequest { Name = "api-run" }, new TestCallContext());
        var one = await Policies.GetPolicyRun(new V1.GetPolicyRunRequest { Name = "api-run", RunId = admitted.RunId }, new TestCallContext());
        var after = await Fleet.GetCompliance(new V1.GetComplianceRequest { Policy = "api-run" }, new TestCallContext());

        Assert.Equal(["api-run-1", "api-run-2"], before.Vms.Select(v => v.Vm));
        Assert.All(before.Vms, v => Assert.Equal(V1.ComplianceStatus.Never, v.Policies.Single(p => p.Policy == "api-run").Status));
        Assert.Equal(V1.PolicyRunTrigger.Manual, admitted.Trigger);
        var snapshots = stream.Messages.Select(m => m.Run).ToList();
        Assert.All(snapshots, s => Assert.Equal(admitted.RunId, s.RunId));
        Assert.Equal(snapshots.Select(s => s.Version).Order(), snapshots.Select(s => s.Version));
        // Only changes are streamed: no snapshot repeats the one before it.
        Assert.All(snapshots.Skip(1).Zip(snapshots), pair => Assert.NotEqual(pair.Second, pair.First));
        Assert.All(snapshots[..^1], s => Assert.Equal(V1.PolicyRunState.Running, s.State));
        var ended = snapshots[^1];
        Assert.Equal(V1.PolicyRunState.Completed, ended.State);
        Assert.NotNull(ended.EndedAt);
        Assert.All(ended.Targets, t => Assert.Equal(V1.PolicyTargetStatus.Succeeded, t.Status));
        Assert.All(ended.Targets, t => Assert.StartsWith($"{t.Host}/{t.Vm}/", t.BackupRun, StringComparison.Ordinal));
        Assert.Equal(admitted.RunId, Assert.Single(runs.Runs).RunId);
        // The run record may still change after it ended (its version then grows); what clients see of it does not.
        var shown = one.Run.Clone();
        shown.Version = ended.Version;
        Assert.Equal(ended, shown);
        Assert.All(after.Vms, v => Assert.Equal(V1.ComplianceStatus.Ok, v.Policies.Single(p => p.Policy == "api-run").Status));
        Assert.All(after.Vms, v => Assert.NotNull(v.LastBackupAt));
    }

    [Fact]
    public async Task WatchPolicyRun_UnknownRun_NotFound()
    {
        await Policies.ApplyPolicy(new V1.ApplyPolicyRequest { Spec = Spec("api-watch", "api-watch") }, new TestCallContext());

        var e = await Assert.ThrowsAsync<OrchestratorException>(() => Policies.WatchPolicyRun(
            new V1.WatchPolicyRunRequest { Name = "api-watch", RunId = "p-nope" }, new ListWriter<V1.WatchPolicyRunResponse>(), new TestCallContext()));

        Assert.Equal(ErrorCode.NotFound, e.Code);
    }

    [Fact]
    public async Task GetCompliance_HostDown_NamedUnavailable_UnlessAnotherHostIsAskedFor()
    {
        await fixture.Grains.GetGrain<IFleetGrain>(GrainKeys.Fleet).RegisterHostAsync(DownHost, $"simulated://{DownHost}");

        var all = await Fleet.GetCompliance(new V1.GetComplianceRequest(), new TestCallContext());
        var one = await Fleet.GetCompliance(new V1.GetComplianceRequest { Host = "kvm-01" }, new TestCallContext());
        var unprotected = await Fleet.GetCompliance(new V1.GetComplianceRequest { Host = "kvm-01", Status = V1.ComplianceStatus.Unprotected }, new TestCallContext());

        Assert.Contains(DownHost, all.UnavailableHosts);
        Assert.Empty(one.UnavailableHosts);
        Assert.All(one.Vms, v => Assert.Equal("kvm-01", v.Host));
        Assert.Contains("web-1", unprotected.Vms.Select(v => v.Vm));
        Assert.All(unprotected.Vms, v => Assert.Equal(V1.ComplianceStatus.Unprotected, v.Status));
    }

    [Fact]
    public async Task ListOverlays_Refresh_FindsDisksOnOverlays_TellsOrchestratorOverlaysApart_AllListsEveryDisk()
    {
        var hypervisor = fixture.Hypervisors["kvm-02"];
        await fixture.Grains.GetGrain<IFleetGrain>(GrainKeys.Fleet).RegisterHostAsync(DownHost, $"simulated://{DownHost}");
        hypervisor.AddDomain("api-ovl-1", DomainPowerState.Running, [("vda", "qcow2", 64 * MiB)], new Dictionary<string, string> { ["group"] = "api-ovl" });
        hypervisor.AddDomain("api-ovl-2", DomainPowerState.Running, [("vda", "qcow2", 64 * MiB), ("vdb", "raw", 64 * MiB)], new Dictionary<string, string> { ["group"] = "api-ovl" });
        await hypervisor.CreateExternalSnapshotAsync("api-ovl-1", [new OverlaySpec("vda", "/var/lib/libvirt/images/api-ovl-1-vda.orch-b-test.qcow2")]);
        await hypervisor.CreateExternalSnapshotAsync("api-ovl-2", [new OverlaySpec("vda", "/var/lib/libvirt/images/api-ovl-2-vda.snap1.qcow2")]);
        try
        {
            // Not synced yet: only a refresh sees the new domains.
            var stale = await Fleet.ListOverlays(new V1.ListOverlaysRequest(), new TestCallContext());
            var fresh = await Fleet.ListOverlays(new V1.ListOverlaysRequest { Refresh = true }, new TestCallContext());
            var all = await Fleet.ListOverlays(new V1.ListOverlaysRequest { All = true, Host = "kvm-02" }, new TestCallContext());

            Assert.DoesNotContain(stale.Disks, d => d.Vm.StartsWith("api-ovl-", StringComparison.Ordinal));
            var found = fresh.Disks.Where(d => d.Vm.StartsWith("api-ovl-", StringComparison.Ordinal)).ToList();
            Assert.Equal(["api-ovl-1/vda", "api-ovl-2/vda"], found.Select(d => $"{d.Vm}/{d.Disk}"));
            Assert.All(found, d => Assert.Equal(("kvm-02", 2), (d.Host, d.ChainDepth)));
            Assert.Equal("/var/lib/libvirt/images/api-ovl-1-vda.orch-b-test.qcow2", found[0].ActivePath);
            Assert.True(found[0].OrchestratorOverlay);
            Assert.False(found[1].OrchestratorOverlay);
            Assert.Contains(DownHost, fresh.UnavailableHosts);
            Assert.Contains(all.Disks, d => (d.Vm, d.Disk, d.ChainDepth) == ("api-ovl-2", "vdb", 1));
            Assert.All(all.Disks, d => Assert.Equal("kvm-02", d.Host));
            Assert.Empty(all.UnavailableHosts);
        }
        finally
        {
            foreach (string domain in new[] { "api-ovl-1", "api-ovl-2" })
            {
                await hypervisor.DestroyDomainAsync(domain);
                await hypervisor.UndefineDomainAsync(domain);
            }

            await fixture.Grains.GetGrain<IHostGrain>("kvm-02").SyncInventoryAsync();
        }
    }

    [Fact]
    public async Task ListOverlays_OneHostThatIsDown_HostUnavailable()
    {
        await fixture.Grains.GetGrain<IFleetGrain>(GrainKeys.Fleet).RegisterHostAsync(DownHost, $"simulated://{DownHost}");

        var e = await Assert.ThrowsAsync<OrchestratorException>(() => Fleet.ListOverlays(new V1.ListOverlaysRequest { Host = DownHost }, new TestCallContext()));

        Assert.Equal(ErrorCode.HostUnavailable, e.Code);
    }

    private sealed class ListWriter<T> : IServerStreamWriter<T>
    {
        public List<T> Messages { get; } = [];

        public WriteOptions? WriteOptions { get; set; }

        public Task WriteAsync(T message) => WriteAsync(message, CancellationToken.None);

        public Task WriteAsync(T message, CancellationToken cancellationToken)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Messages.Add(message);
            return Task.CompletedTask;
        }
    }

    /// <summary>The call context of a service method called in-process: only the cancellation token matters here.</summary>
    private sealed class TestCallContext(CancellationToken cancellationToken = default) : ServerCallContext
    {
        protected override string MethodCore => "test";

        protected override string HostCore => "localhost";

        protected override string PeerCore => "test";

        protected override DateTime DeadlineCore => DateTime.MaxValue;

        protected override Metadata RequestHeadersCore { get; } = [];

        protected override CancellationToken CancellationTokenCore => cancellationToken;

        protected override Metadata ResponseTrailersCore { get; } = [];

        protected override Status StatusCore { get; set; }

        protected override WriteOptions? WriteOptionsCore { get; set; }

        protected override AuthContext AuthContextCore { get; } = new(null, []);

        protected override ContextPropagationToken CreatePropagationTokenCore(ContextPropagationOptions? options) => throw new NotSupportedException();

        protected override Task WriteResponseHeadersAsyncCore(Metadata responseHeaders) => Task.CompletedTask;
    }
}

/// <summary>A cluster of its own, so the hosts and policies these tests add never meet the grain tests' runs.</summary>
[CollectionDefinition(Name)]
public sealed class PolicyApiCollection : ICollectionFixture<PolicyClusterFixture>
{
    public const string Name = "policy api cluster";
}
