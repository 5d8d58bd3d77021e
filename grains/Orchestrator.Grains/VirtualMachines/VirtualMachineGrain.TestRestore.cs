using System.Diagnostics;
using Microsoft.Extensions.DependencyInjection;
using Orchestrator.Grains.Backups;
using Orchestrator.Grains.Placement;

namespace Orchestrator.Grains.VirtualMachines;

/// <summary>
/// Test restores of this VM's backup sets: the throwaway VM's lifecycle runs in the test host's
/// <see cref="ITestRestoreHostGrain"/> (any host of the cluster: the one asked for, or one chosen by capacity); this
/// grain admits the test (one at a time), persists which host runs it before asking that host, and keeps the results
/// (last test per run, last proven restore, metrics, the host index's proven-restore time).
/// </summary>
internal sealed partial class VirtualMachineGrain
{
    /// <summary>Bound of each question to a test host (offer, state of a test).</summary>
    private static readonly TimeSpan TestHostCallTimeout = TimeSpan.FromSeconds(15);

    /// <summary>Set while a test is being handed to its host: the host does not know it yet, so it is not asked.</summary>
    private bool _startingTest;

    public async Task<TestRestoreView> StartTestRestoreAsync(TestRestoreRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        request.Validate();
        if (state.State.ActiveTest is { } running)
        {
            throw new OrchestratorException(
                ErrorCode.Conflict,
                $"a test restore of '{VmKey}' ({running.Id}, VM '{running.Domain}' on host '{HostOf(running)}') is {(running.Outcome == TestRestoreOutcome.Running ? "running" : "still cleaning up")}; one at a time",
                reason: "TEST_RUNNING");
        }

        var (_, runId) = await RestorableRunAsync(request.RunKey, cancellationToken);
        var host = request.Host is { Length: > 0 } asked ? asked : await ChooseTestHostAsync(request.RunKey, cancellationToken);
        var now = time.GetUtcNow();
        var record = new TestRestoreRecord
        {
            Id = $"test-{now:yyyyMMdd'T'HHmmssfff'Z'}",
            RunId = runId,
            Domain = TestDomainName(Key.Vm, runId),
            Host = host,
            Probe = request.Probe.ToString(),
            TimeoutSeconds = request.Timeout.TotalSeconds,
            StartedAt = now,
            Outcome = TestRestoreOutcome.Running,
            Policy = request.Policy,
            TraceId = Activity.Current?.TraceId.ToString(),
        };

        // Which host runs it, before that host writes anything: a test this grain loses track of is asked for there.
        state.State.ActiveTest = record;
        _startingTest = true;
        TestRestoreRecord started;
        try
        {
            await _writes.WriteAsync(cancellationToken);
            started = await GrainFactory.GetGrain<ITestRestoreHostGrain>(host).StartAsync(
                new TestRestoreOrder(VmKey, request.RunKey, record.Id, record.Domain, request.Probe, request.Timeout, now, request.Policy, record.TraceId),
                cancellationToken);
        }
        catch
        {
            // Refused before anything was written there (or the host is unavailable): no test.
            state.State.ActiveTest = null;
            await _writes.WriteAsync(CancellationToken.None);
            throw;
        }
        finally
        {
            _startingTest = false;
        }

        state.State.ActiveTest = started with { Files = [] };
        if (started.Outcome == TestRestoreOutcome.Running)
        {
            await _writes.WriteAsync(cancellationToken);
        }
        else
        {
            // Ended before the host answered (a fast failure): recorded now.
            await FollowActiveTestAsync(cancellationToken);
        }

        return TestView(state.State.TestResults.LastOrDefault(r => r.Id == started.Id) ?? state.State.ActiveTest ?? started);
    }

    public async Task<TestRestoreView> GetTestRestoreAsync(string testId, CancellationToken cancellationToken = default)
    {
        if (state.State.ActiveTest is { } active && active.Id == testId)
        {
            await FollowActiveTestAsync(cancellationToken);
        }

        var record = state.State.ActiveTest is { } now && now.Id == testId
            ? now
            : state.State.TestResults.LastOrDefault(r => r.Id == testId)
              ?? throw OrchestratorException.NotFound($"VM '{VmKey}' has no test restore '{testId}' (the newest {VirtualMachineState.MaxTestResults} are kept)");
        return TestView(record);
    }

    public async Task<TestRestoreView?> TestRestoreIfDueAsync(string runKey, TestRestoreSpec spec, string policy, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (state.State.ActiveTest is not null)
        {
            return null;
        }

        var last = state.State.TestResults.Count == 0 ? null : state.State.TestResults.MaxBy(r => r.StartedAt);
        var completedSince = last is null
            ? 0
            : (await History.ReadAsync(cancellationToken)).Count(r => r.Step == BackupStep.Completed && r.EndedAt > last.StartedAt);
        if (!TestRestoreSchedule.IsDue(spec, last?.StartedAt, completedSince, time.GetUtcNow()))
        {
            return null;
        }

        return await StartTestRestoreAsync(new TestRestoreRequest(runKey, spec.Probe, spec.Timeout ?? TestRestoreRequest.DefaultTimeout, null, policy), cancellationToken);
    }

    /// <summary>The throwaway VM's name: orch-test-VM-RUN, within the VM-name limit.</summary>
    internal static string TestDomainName(string vm, string runId)
    {
        const string Prefix = TestRestoreRequest.ThrowawayPrefix;
        var name = $"{Prefix}{vm}-{runId}";
        return name.Length <= GrainKeys.MaxVmNameLength ? name : $"{Prefix}{vm[..(GrainKeys.MaxVmNameLength - Prefix.Length - 1 - runId.Length)]}-{runId}";
    }

    /// <summary>
    /// The host for a test restore when none was asked for: every host with a live silo is asked (in parallel, each
    /// bounded) what it offers; of those that qualify (set under its roots, free memory and CPU for the throwaway, under
    /// its limit of test restores) the one with the fewest test restores running wins, this VM's own host on a tie,
    /// then the most free memory. None qualifies: FailedPrecondition naming each host and why.
    /// </summary>
    private async Task<string> ChooseTestHostAsync(string runKey, CancellationToken cancellationToken)
    {
        var hosts = ServiceProvider.GetRequiredService<IHostDirectory>().ServedHosts().Keys.Order(StringComparer.Ordinal).ToList();
        if (!hosts.Contains(Key.Host))
        {
            hosts.Insert(0, Key.Host);
        }

        var offers = await Task.WhenAll(hosts.Select(async h =>
        {
            try
            {
                return await GrainFactory.GetGrain<ITestRestoreHostGrain>(h).OfferAsync(runKey, cancellationToken).WaitAsync(TestHostCallTimeout, cancellationToken);
            }
            catch (Exception e) when (e is OrchestratorException or TimeoutException or OrleansException or Hypervisor.HypervisorException)
            {
                return new TestHostOffer(h, 0, 0, 0, 0, 0, 0, 0, $"did not answer: {e.Message}");
            }
        }));
        var best = TestHostChoice.Best(offers, Key.Host);
        return best?.Host ?? throw new OrchestratorException(
            ErrorCode.FailedPrecondition,
            $"no host can take a test restore of '{runKey}' now: {string.Join("; ", offers.Select(o => $"{o.Host}: {o.Refusal}"))}",
            field: "host",
            reason: "NO_TEST_HOST");
    }

    /// <summary>
    /// Asks the test's host how it stands and records its end once it ended (then the host forgets it). A host that
    /// does not answer leaves the test as it is (asked again later); a host that never had it means the test never
    /// started there (this grain stopped between its own write and the host's).
    /// </summary>
    private async Task FollowActiveTestAsync(CancellationToken cancellationToken)
    {
        if (state.State.ActiveTest is not { } active || _startingTest)
        {
            return;
        }

        var host = GrainFactory.GetGrain<ITestRestoreHostGrain>(HostOf(active));
        TestRestoreRecord? there;
        try
        {
            if (string.IsNullOrEmpty(active.Host))
            {
                // Left by this grain when it ran tests itself: its host's test-restore grain cleans it up now.
                there = await host.AdoptAsync(VmKey, active, cancellationToken).WaitAsync(CleanupBound, cancellationToken);
                state.State.ActiveTest = there with { Files = [] };
            }
            else
            {
                there = await host.GetAsync(active.Id, cancellationToken).WaitAsync(TestHostCallTimeout, cancellationToken);
            }
        }
        catch (Exception e) when (e is OrchestratorException or TimeoutException or OrleansException)
        {
            LogTestCleanupFailed(logger, VmKey, active.Id, $"host '{HostOf(active)}' did not say how the test stands (asked again later): {e.Message}");
            return;
        }

        if (there is null)
        {
            active.Reason = $"interrupted: host '{HostOf(active)}' never started it (this VM's silo stopped while asking)";
            active.CleanedUp = true;
            await RecordTestEndAsync(active with { Outcome = TestRestoreOutcome.Failed, EndedAt = time.GetUtcNow() });
            return;
        }

        if (there.Outcome == TestRestoreOutcome.Running)
        {
            return;
        }

        await RecordTestEndAsync(there with { Files = [] });
        if (there.CleanedUp)
        {
            try
            {
                await host.ForgetAsync(there.Id, cancellationToken).WaitAsync(TestHostCallTimeout, cancellationToken);
            }
            catch (Exception e) when (e is OrchestratorException or TimeoutException or OrleansException)
            {
                LogTestCleanupFailed(logger, VmKey, there.Id, $"host '{there.Host}' did not drop the ended test (asked again later): {e.Message}");
            }
        }
    }

    private static readonly TimeSpan CleanupBound = TimeSpan.FromMinutes(3);

    /// <summary>Stores an ended test with the VM (once), its proven restore, metrics and the host index's record.</summary>
    private async Task RecordTestEndAsync(TestRestoreRecord record)
    {
        var s = state.State;
        var already = s.TestResults.FirstOrDefault(r => r.Id == record.Id);
        var firstTime = already is null || already.Outcome != record.Outcome;
        s.TestResults.RemoveAll(r => r.RunId == record.RunId || r.Id == record.Id);
        s.TestResults.Add(record);
        if (s.TestResults.Count > VirtualMachineState.MaxTestResults)
        {
            s.TestResults.RemoveRange(0, s.TestResults.Count - VirtualMachineState.MaxTestResults);
        }

        if (record.Outcome == TestRestoreOutcome.Passed)
        {
            s.LastProvenRestore = record;
        }

        s.ActiveTest = record.CleanedUp ? null : record;
        await _writes.WriteAsync(CancellationToken.None);
        if (!firstTime)
        {
            return;
        }

        if (record.Outcome == TestRestoreOutcome.Passed)
        {
            try
            {
                // For compliance's RTO (best effort: the VM grain keeps the record either way).
                await GrainFactory.GetGrain<IHostIndexGrain>(Key.Host).RecordProvenRestoreAsync(Key.Vm, record.EndedAt!.Value, record.BootSeconds);
            }
            catch (Exception e) when (e is OrchestratorException or TimeoutException or OrleansException)
            {
                LogTestCleanupFailed(logger, VmKey, record.Id, $"the host index did not take the proven restore: {e.Message}");
            }
        }

        TestRestoreMetrics.Record(Key.Host, Key.Vm, record);
        if (record.Reason.StartsWith("interrupted", StringComparison.Ordinal))
        {
            LogTestRestoreInterrupted(logger, VmKey, record.Id, record.Domain);
        }

        LogTestRestoreEnded(logger, VmKey, record.Id, record.RunId, record.Outcome, record.BootSeconds, record.Reason);
    }

    /// <summary>A test in flight (or whose clean-up is unfinished) is followed on its host: on activation and with each reconcile.</summary>
    private async Task CleanUpLeftoverTestAsync()
    {
        if (state.State.ActiveTest is null)
        {
            return;
        }

        try
        {
            await FollowActiveTestAsync(CancellationToken.None);
        }
        catch (Exception e) when (e is OrchestratorException or IOException)
        {
            LogTestCleanupFailed(logger, VmKey, state.State.ActiveTest?.Id ?? "", e.Message);
        }
    }

    private string HostOf(TestRestoreRecord r) => string.IsNullOrEmpty(r.Host) ? Key.Host : r.Host;

    private TestRestoreView TestView(TestRestoreRecord r) => new(
        r.Id,
        BackupRunKeys.Of(Key.Host, Key.Vm, r.RunId),
        HostOf(r),
        r.Domain,
        r.Probe,
        r.Outcome,
        r.StartedAt,
        r.EndedAt,
        r.RestoreSeconds,
        r.BootSeconds,
        r.Reason,
        r.CleanedUp,
        r.Policy);

    /// <summary>The newest test of a run (the one running first).</summary>
    private TestRestoreView? LastTestOf(string runId) =>
        state.State.ActiveTest is { } active && active.RunId == runId ? TestView(active)
        : state.State.TestResults.LastOrDefault(r => r.RunId == runId) is { } done ? TestView(done) : null;

    private (TestRestoreView? Proven, TestRestoreView? Last) TestSummary() =>
        (state.State.LastProvenRestore is { } proven ? TestView(proven) : null,
         state.State.ActiveTest is { } active ? TestView(active) : state.State.TestResults.Count > 0 ? TestView(state.State.TestResults[^1]) : null);
}

/// <summary>The probe answered that the guest does not work (or cannot answer at all): no retry.</summary>
internal sealed class TestProbeFailedException(string message) : Exception(message);

/// <summary>Which host takes a test restore chosen by capacity.</summary>
internal static class TestHostChoice
{
    /// <summary>
    /// Of the offers that qualify: the fewest test restores running, then <paramref name="ownHost"/> (the VM's host)
    /// when equal, then the most free memory, then the name. Null when none qualifies.
    /// </summary>
    public static TestHostOffer? Best(IEnumerable<TestHostOffer> offers, string ownHost) =>
        offers.Where(o => o.Qualifies)
            .OrderBy(o => o.ActiveTests)
            .ThenBy(o => o.Host == ownHost ? 0 : 1)
            .ThenByDescending(o => o.FreeMemoryKiB - o.NeedMemoryKiB)
            .ThenBy(o => o.Host, StringComparer.Ordinal)
            .FirstOrDefault();
}
