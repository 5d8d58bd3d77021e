using System.Diagnostics;
using System.Text.RegularExpressions;
using Microsoft.Extensions.DependencyInjection;
using Orchestrator.Grains.Backups;
using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.VirtualMachines;

/// <summary>
/// Test restores: a completed backup set is restored (the restore code, checksums checked while copying) into a
/// throwaway VM with no network, booted, probed, and then always destroyed, undefined and deleted. The throwaway names
/// are persisted before anything is written, so a silo that dies mid-test cleans up on the next activation.
/// </summary>
internal sealed partial class VirtualMachineGrain
{
    /// <summary>How much of the console's tail a console probe reads per look.</summary>
    private const int ConsoleTailBytes = 64 * 1024;

    /// <summary>Bound of each clean-up call (destroy, undefine, delete): clean-up runs after the test's own timeout.</summary>
    private static readonly TimeSpan CleanupCallTimeout = TimeSpan.FromSeconds(60);

    private Task? _testTask;
    private CancellationTokenSource? _testCancellation;

    public async Task<TestRestoreView> StartTestRestoreAsync(TestRestoreRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        request.Validate();
        if (request.Host is { Length: > 0 } host && host != Key.Host)
        {
            // The set is restored by this VM's host for now; restores on other hosts come with host-side restore.
            throw OrchestratorException.InvalidArgument("host", $"test restores of '{VmKey}' run on its own host '{Key.Host}' for now, not on '{host}'");
        }

        if (state.State.ActiveTest is { } running)
        {
            throw new OrchestratorException(
                ErrorCode.Conflict,
                $"a test restore of '{VmKey}' ({running.Id}, VM '{running.Domain}') is {(running.Outcome == TestRestoreOutcome.Running ? "running" : "still cleaning up")}; one at a time",
                reason: "TEST_RUNNING");
        }

        var (run, runId) = await RestorableRunAsync(request.RunKey, cancellationToken);
        var domain = TestDomainName(Key.Vm, runId);
        if ((await hypervisor.ListDomainsAsync(cancellationToken)).Any(d => d.Name == domain))
        {
            throw new OrchestratorException(ErrorCode.AlreadyExists, $"a VM named '{domain}' already exists on host '{Key.Host}' and is not a test restore of this grain's; it is left alone", field: "key");
        }

        var directory = SafeFiles.ResolveExistingPrefix(Path.GetDirectoryName(run.Disks[0].BasePath)!);
        var consoleFile = Path.Combine(directory, $"{domain}-console.log");
        var plan = await new RestoreEngine(Key.Host, hypervisor, backupOptions.Value).PlanAsync(
            new RestoreRequest(request.RunKey, domain, Define: true),
            d => DomainXmlEditor.ForTestRestore(d, consoleFile),
            cancellationToken);
        var now = time.GetUtcNow();
        var record = new TestRestoreRecord
        {
            Id = $"test-{now:yyyyMMdd'T'HHmmssfff'Z'}",
            RunId = runId,
            Domain = domain,
            Files = [.. plan.Files],
            Probe = request.Probe.ToString(),
            TimeoutSeconds = request.Timeout.TotalSeconds,
            StartedAt = now,
            Outcome = TestRestoreOutcome.Running,
            Policy = request.Policy,
            TraceId = Activity.Current?.TraceId.ToString(),
        };

        // The intent: every name the test may create, before any of it exists.
        state.State.ActiveTest = record;
        await _writes.WriteAsync(cancellationToken);
        _testCancellation ??= new CancellationTokenSource();
        _testTask = RunTestRestoreAsync(run, plan, record, request.Probe, request.Timeout, Activity.Current?.Context ?? default, _testCancellation.Token);
        this.DelayDeactivation(request.Timeout + TimeSpan.FromMinutes(5));
        return TestView(record);
    }

    public async Task<TestRestoreView> GetTestRestoreAsync(string testId, CancellationToken cancellationToken = default)
    {
        await Task.CompletedTask;
        var record = state.State.ActiveTest is { } active && active.Id == testId
            ? active
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

    private async Task RunTestRestoreAsync(BackupRunState run, RestoreEngine.Plan plan, TestRestoreRecord record, TestProbe probe, TimeSpan timeout, ActivityContext parent, CancellationToken stop)
    {
        using var activity = Telemetry.Source.StartActivity("backup.test", ActivityKind.Internal, parent);
        Tag(activity, run.RunId);
        activity?.SetTag("test", record.Id);
        activity?.SetTag("probe", probe.Name);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(stop);
        deadline.CancelAfter(timeout);
        var ct = deadline.Token;
        var step = "admission";

        // Published on the record only after clean-up: a caller polling the record sees it Running until all is gone.
        var outcome = TestRestoreOutcome.Failed;
        var reason = "";
        string? lastProbeError = null;
        var clock = Stopwatch.StartNew();
        try
        {
            step = "waiting for a test slot";
            using var slot = await ServiceProvider.GetRequiredService<TestRestoreSlots>().AcquireAsync(ct);
            step = "restore";
            clock.Restart();
            using (Telemetry.Source.StartActivity("backup.test.restore"))
            {
                await new RestoreEngine(Key.Host, hypervisor, backupOptions.Value).ExecuteAsync(plan, ct);
            }

            record.RestoreSeconds = clock.Elapsed.TotalSeconds;
            step = "boot";
            var boot = Stopwatch.StartNew();
            using (Telemetry.Source.StartActivity("backup.test.boot"))
            {
                await hypervisor.StartDomainAsync(record.Domain, cancellationToken: ct);
            }

            step = "probe";
            using (var probing = Telemetry.Source.StartActivity("backup.test.probe"))
            {
                probing?.SetTag("probe", probe.Name);
                await ProbeAsync(record.Domain, probe, timeout, e => lastProbeError = e, ct);
            }

            record.BootSeconds = boot.Elapsed.TotalSeconds;
            outcome = TestRestoreOutcome.Passed;
            reason = $"{probe.Name} probe answered {record.BootSeconds:0.0} s after the start";
        }
        catch (OperationCanceledException) when (!stop.IsCancellationRequested)
        {
            reason = $"timed out after {timeout.TotalSeconds:0} s in {step}" + (lastProbeError is null ? "" : $" (last probe answer: {lastProbeError})");
        }
        catch (OperationCanceledException)
        {
            reason = $"cut short in {step}: the VM grain was deactivated";
        }
        catch (Exception e) when (e is OrchestratorException or HypervisorException or IOException or UnauthorizedAccessException or TestProbeFailedException)
        {
            reason = $"{step}: {e.Message}";
        }
        finally
        {
            using (Telemetry.Source.StartActivity("backup.test.cleanup"))
            {
                await FinishTestAsync(record, outcome, reason);
            }

            activity?.SetTag("outcome", record.Outcome == TestRestoreOutcome.Passed ? "passed" : "failed");
            if (record.Outcome != TestRestoreOutcome.Passed)
            {
                activity?.SetStatus(ActivityStatusCode.Error, record.Reason);
            }
        }
    }

    /// <summary>Waits until the probe answers (each look bounded; the caller's token carries the test's timeout).</summary>
    private async Task ProbeAsync(string domain, TestProbe probe, TimeSpan commandTimeout, Action<string> lastError, CancellationToken cancellationToken)
    {
        var pattern = probe.Kind == TestProbeKind.Console ? new Regex(probe.Argument, RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1)) : null;
        var pause = TimeSpan.FromMilliseconds(250);
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            try
            {
                if (pattern is not null)
                {
                    var console = await hypervisor.ReadConsoleAsync(domain, ConsoleTailBytes, cancellationToken)
                        ?? throw new TestProbeFailedException("the throwaway VM has no serial console written to a file");
                    if (pattern.IsMatch(console))
                    {
                        return;
                    }

                    lastError("no console line matches yet");
                }
                else
                {
                    await hypervisor.PingGuestAgentAsync(domain, TimeSpan.FromSeconds(5), cancellationToken);
                    if (probe.Kind == TestProbeKind.Agent)
                    {
                        return;
                    }

                    // The agent answered: the command runs once, bounded by what is left of the test's timeout.
                    var result = await hypervisor.RunGuestCommandAsync(domain, "/bin/sh", ["-c", probe.Argument], commandTimeout, cancellationToken);
                    if (result.ExitCode != 0)
                    {
                        throw new TestProbeFailedException($"the command exited {result.ExitCode}: {Head(result.Output)}");
                    }

                    return;
                }
            }
            catch (HypervisorException e) when (e.Kind is HypervisorErrorKind.AgentUnavailable or HypervisorErrorKind.Timeout)
            {
                // Not up yet: the guest is still booting or its agent not started.
                lastError(e.Message);
            }

            var info = await hypervisor.GetDomainAsync(domain, cancellationToken);
            if (info.State is not (DomainPowerState.Running or DomainPowerState.Blocked))
            {
                throw new TestProbeFailedException($"the guest is {info.State} before the {probe.Name} probe answered (it did not boot)");
            }

            await Task.Delay(pause, time, cancellationToken);
            pause = TimeSpan.FromMilliseconds(Math.Min(pause.TotalMilliseconds * 2, 1000));
        }
    }

    private static string Head(string text)
    {
        var line = text.ReplaceLineEndings(" ").Trim();
        return line.Length == 0 ? "(no output)" : line.Length > 300 ? line[..300] + "..." : line;
    }

    /// <summary>
    /// Records the test's end, then destroys, undefines and deletes what it created (each call bounded). The result
    /// is stored with the VM either way; the intent is dropped only once everything is gone, so clean-up that failed is
    /// tried again by the reconcile timer and on the next activation.
    /// </summary>
    private async Task FinishTestAsync(TestRestoreRecord record, TestRestoreOutcome outcome, string reason)
    {
        var cleanupError = await CleanUpTestAsync(record);
        record.EndedAt = time.GetUtcNow();
        record.CleanedUp = cleanupError is null;
        record.Reason = cleanupError is null ? reason : $"{reason}; clean-up incomplete (retried): {cleanupError}";
        record.Outcome = outcome;

        var s = state.State;
        s.TestResults.RemoveAll(r => r.RunId == record.RunId || r.Id == record.Id);
        s.TestResults.Add(record with { Files = [] });
        if (s.TestResults.Count > VirtualMachineState.MaxTestResults)
        {
            s.TestResults.RemoveRange(0, s.TestResults.Count - VirtualMachineState.MaxTestResults);
        }

        if (record.Outcome == TestRestoreOutcome.Passed)
        {
            s.LastProvenRestore = record with { Files = [] };
        }

        s.ActiveTest = record.CleanedUp ? null : record;
        await _writes.WriteAsync(CancellationToken.None);
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
        LogTestRestoreEnded(logger, VmKey, record.Id, record.RunId, record.Outcome, record.BootSeconds, record.Reason);
    }

    /// <summary>Destroys and undefines the throwaway domain and deletes every file the test named; null when all is gone.</summary>
    private async Task<string?> CleanUpTestAsync(TestRestoreRecord record)
    {
        var errors = new List<string>();
        using var bound = new CancellationTokenSource(CleanupCallTimeout);
        try
        {
            var domain = await hypervisor.GetDomainAsync(record.Domain, bound.Token);
            if (domain.State is not (DomainPowerState.ShutOff or DomainPowerState.Crashed))
            {
                await FencedAsync(h => h.DestroyDomainAsync(record.Domain, bound.Token), bound.Token);
            }

            await FencedAsync(h => h.UndefineDomainAsync(record.Domain, bound.Token), bound.Token);
        }
        catch (HypervisorException e) when (e.Kind == HypervisorErrorKind.DomainNotFound)
        {
            // Never defined, or gone already.
        }
        catch (Exception e) when (e is HypervisorException or OperationCanceledException)
        {
            errors.Add($"domain '{record.Domain}': {e.Message}");
        }

        foreach (var path in record.Files)
        {
            try
            {
                if (await hypervisor.Images.ExistsAsync(path, bound.Token))
                {
                    await hypervisor.Images.DeleteAsync(path, bound.Token);
                }
                else if (File.Exists(path) || new FileInfo(path).LinkTarget is not null)
                {
                    File.Delete(path);
                }
            }
            catch (Exception e) when (e is HypervisorException or IOException or UnauthorizedAccessException or OperationCanceledException)
            {
                errors.Add($"'{path}': {e.Message}");
            }
        }

        return errors.Count == 0 ? null : string.Join("; ", errors);
    }

    /// <summary>
    /// A test left by an earlier activation (the silo died, or its clean-up failed): its throwaway VM and files are
    /// removed and, when it never ended, it is recorded as failed. Runs on activation and with each reconcile.
    /// </summary>
    private async Task CleanUpLeftoverTestAsync()
    {
        if (state.State.ActiveTest is not { } left || _testTask is { IsCompleted: false })
        {
            return;
        }

        try
        {
            if (left.Outcome == TestRestoreOutcome.Running)
            {
                LogTestRestoreInterrupted(logger, VmKey, left.Id, left.Domain);
                await FinishTestAsync(left, TestRestoreOutcome.Failed, "interrupted: the silo running the test stopped before it ended");
                return;
            }

            if (await CleanUpTestAsync(left) is null)
            {
                state.State.ActiveTest = null;
                var recorded = state.State.TestResults.FirstOrDefault(r => r.Id == left.Id);
                if (recorded is not null)
                {
                    recorded.CleanedUp = true;
                }

                await _writes.WriteAsync(CancellationToken.None);
            }
        }
        catch (Exception e) when (e is HypervisorException or OrchestratorException or IOException)
        {
            LogTestCleanupFailed(logger, VmKey, left.Id, e.Message);
        }
    }

    private TestRestoreView TestView(TestRestoreRecord r) => new(
        r.Id,
        BackupRunKeys.Of(Key.Host, Key.Vm, r.RunId),
        Key.Host,
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
