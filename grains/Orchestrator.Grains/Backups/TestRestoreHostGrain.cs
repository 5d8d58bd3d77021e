using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orchestrator.Grains.Placement;
using Orchestrator.Grains.Storage;
using Orchestrator.Grains.VirtualMachines;
using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.Backups;

/// <summary>
/// Test restores on this grain's host (key: the host; placed on its silo, like the VM grains): a completed backup set
/// is restored (<see cref="RestoreEngine"/>, checksums checked while copying) into a throwaway VM with no network,
/// booted, probed, and then always destroyed, undefined and deleted. Every name the test may create is persisted here
/// before anything is written; after a crash of this silo the next activation (at the silo's start: the host agent
/// wakes it) removes them and records the test failed, "interrupted". The VM grain that ordered the test is told when
/// it ended and keeps the result; the host forgets a test once its VM recorded it.
/// </summary>
[HostAffinePlacement]
internal sealed partial class TestRestoreHostGrain(
    [PersistentState("test-restore-host", StorageNames.Default)] IPersistentState<TestRestoreHostState> state,
    IHypervisor hypervisor,
    TestRestoreSlots slots,
    IOptions<BackupOptions> backupOptions,
    TimeProvider time,
    ILogger<TestRestoreHostGrain> logger) : Grain, ITestRestoreHostGrain
{
    /// <summary>How much of the console's tail a console probe reads per look.</summary>
    private const int ConsoleTailBytes = 64 * 1024;

    /// <summary>Bound of each clean-up call (destroy, undefine, delete): clean-up runs after the test's own timeout.</summary>
    private static readonly TimeSpan CleanupCallTimeout = TimeSpan.FromSeconds(60);

    /// <summary>Bound of telling the VM grain that a test ended (retried by the reconcile tick).</summary>
    private static readonly TimeSpan TellTimeout = TimeSpan.FromSeconds(10);

    /// <summary>An ended test whose VM never came to record it is dropped after this long.</summary>
    private static readonly TimeSpan EndedKept = TimeSpan.FromDays(7);

    private readonly StateWriteGate _writes = new(() => state.WriteStateAsync());
    private readonly Dictionary<string, Task> _running = new(StringComparer.Ordinal);
    private readonly HashSet<string> _reconciling = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stop = new();

    private string Host => this.GetPrimaryKeyString();

    private BackupOptions Options => backupOptions.Value;

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        // Leftovers (a crash mid-test), clean-ups that failed and results not yet recorded by their VM: now, then
        // with every reconcile tick. Kept alive: one activation per host.
        this.RegisterGrainTimer(
            ct => ReconcileAsync(ct),
            new GrainTimerCreationOptions(TimeSpan.Zero, Options.ReconcileInterval) { KeepAlive = true, Interleave = true });
        return Task.CompletedTask;
    }

    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        // Each test's own finally destroys its VM and records it; bounded by the deactivation's token.
        await _stop.CancelAsync();
        await Task.WhenAll(_running.Values).WaitAsync(cancellationToken).ContinueWith(_ => { }, TaskScheduler.Current);
        await _writes.DrainAsync().WaitAsync(cancellationToken).ContinueWith(_ => { }, TaskScheduler.Current);
    }

    public async Task<TestHostOffer> OfferAsync(string runKey, CancellationToken cancellationToken = default)
    {
        var (needKiB, needVcpus) = (0L, 0);
        string? refusal = null;
        try
        {
            var set = BackupSetManifest.Locate(Options, runKey);
            (needKiB, needVcpus) = ThrowawaySize(set.DomainXml);
            foreach (var disk in set.Disks)
            {
                if (!await hypervisor.Images.ExistsAsync(disk.File, cancellationToken))
                {
                    refusal = $"the set's copy of '{disk.Target}' ({disk.File}) is not there on this host";
                    break;
                }
            }
        }
        catch (OrchestratorException e)
        {
            refusal = $"the backup set is not usable under its backup roots: {e.Message}";
        }

        var capacity = await hypervisor.GetCapacityAsync(cancellationToken);
        var runningVcpus = (await hypervisor.ListDomainsAsync(cancellationToken)).Where(d => d.IsActive).Sum(d => d.VirtualCpus);
        var active = state.State.Tests.Count(t => t.Record.Outcome == TestRestoreOutcome.Running);
        var reserveKiB = Options.TestRestoreMemoryReserveMiB * 1024L;
        var cpuBound = (int)Math.Floor(capacity.Cpus * Options.TestRestoreCpuOvercommit);
        refusal ??= active >= slots.Slots
            ? $"{active} test restores running, its limit is {slots.Slots} (Orchestrator:Backup:MaxConcurrentTestRestores)"
            : capacity.FreeMemoryKiB - needKiB < reserveKiB
                ? $"{capacity.FreeMemoryKiB / 1024} MiB free, the throwaway needs {needKiB / 1024} MiB and {Options.TestRestoreMemoryReserveMiB} MiB stay free (Orchestrator:Backup:TestRestoreMemoryReserveMiB)"
                : runningVcpus + needVcpus > cpuBound
                    ? $"{runningVcpus} vCPUs running on {capacity.Cpus} CPUs, the throwaway's {needVcpus} would pass {cpuBound} (CPUs x Orchestrator:Backup:TestRestoreCpuOvercommit {Options.TestRestoreCpuOvercommit.ToString(CultureInfo.InvariantCulture)})"
                    : null;
        return new TestHostOffer(Host, capacity.FreeMemoryKiB, needKiB, capacity.Cpus, runningVcpus, needVcpus, active, slots.Slots, refusal);
    }

    public async Task<TestRestoreRecord> StartAsync(TestRestoreOrder order, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(order);
        GrainKeys.ParseVm(order.VmKey);
        var (_, vm, runId) = BackupRunKeys.Parse(order.RunKey, "key");
        if (!order.Domain.StartsWith(TestRestoreRequest.ThrowawayPrefix, StringComparison.Ordinal))
        {
            throw OrchestratorException.InvalidArgument("domain", $"a throwaway VM's name starts with '{TestRestoreRequest.ThrowawayPrefix}'");
        }

        if (state.State.Tests.Any(t => t.Record.Id == order.TestId || t.Record.Domain == order.Domain))
        {
            throw new OrchestratorException(ErrorCode.Conflict, $"host '{Host}' already runs a test restore '{order.TestId}' or one with VM '{order.Domain}'", reason: "TEST_RUNNING");
        }

        if ((await hypervisor.ListDomainsAsync(cancellationToken)).Any(d => d.Name == order.Domain))
        {
            throw new OrchestratorException(ErrorCode.AlreadyExists, $"a VM named '{order.Domain}' already exists on host '{Host}' and is not a test restore of this host's; it is left alone", field: "key");
        }

        string? consoleFile = null;
        var plan = await new RestoreEngine(Host, hypervisor, Options).PlanAsync(
            new RestoreRequest(order.RunKey, order.Domain, Define: true),
            d => DomainXmlEditor.ForTestRestore(d, consoleFile = Path.Combine(ConsoleDirectory(order.RunKey), $"{order.Domain}-console.log")),
            cancellationToken);
        var record = new TestRestoreRecord
        {
            Id = order.TestId,
            RunId = runId,
            Domain = order.Domain,
            Host = Host,
            Files = [.. plan.Files, .. consoleFile is null || plan.Files.Contains(consoleFile) ? [] : new[] { consoleFile }],
            Probe = order.Probe.ToString(),
            TimeoutSeconds = order.Timeout.TotalSeconds,
            StartedAt = order.StartedAt,
            Outcome = TestRestoreOutcome.Running,
            Policy = order.Policy,
            TraceId = order.TraceId,
        };

        // The intent: every name the test may create, before any of it exists.
        var entry = new HostTestRestore { VmKey = order.VmKey, Record = record };
        state.State.Tests.Add(entry);
        await _writes.WriteAsync(cancellationToken);
        LogTestStarted(logger, order.TestId, vm, order.RunKey, Host, order.Domain);
        _running[record.Id] = RunAsync(entry, plan, order.Probe, order.Timeout, Activity.Current?.Context ?? default, _stop.Token);
        return record with { Files = [.. record.Files] };
    }

    public Task<TestRestoreRecord?> GetAsync(string testId, CancellationToken cancellationToken = default)
    {
        var found = state.State.Tests.FirstOrDefault(t => t.Record.Id == testId)?.Record;
        return Task.FromResult(found is null ? null : found with { Files = [.. found.Files] });
    }

    public async Task ForgetAsync(string testId, CancellationToken cancellationToken = default)
    {
        if (state.State.Tests.RemoveAll(t => t.Record.Id == testId && t.Record.Outcome != TestRestoreOutcome.Running && t.Record.CleanedUp) > 0)
        {
            await _writes.WriteAsync(cancellationToken);
        }
    }

    public async Task<TestRestoreRecord> AdoptAsync(string vmKey, TestRestoreRecord record, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(record);
        if (state.State.Tests.FirstOrDefault(t => t.Record.Id == record.Id) is not { } entry)
        {
            entry = new HostTestRestore { VmKey = vmKey, Record = record with { Host = Host, Files = [.. record.Files] } };
            state.State.Tests.Add(entry);
            await _writes.WriteAsync(cancellationToken);
        }

        await ReconcileAsync(cancellationToken);
        return entry.Record with { Files = [.. entry.Record.Files] };
    }

    /// <summary>Where the throwaway's console file goes: beside its images (the original's directory on its own host, else the restore root).</summary>
    private string ConsoleDirectory(string runKey)
    {
        var (source, _, _) = BackupRunKeys.Parse(runKey, "key");
        if (source != Host)
        {
            return SafeFiles.ResolveExistingPrefix(Options.RestoreRoots[0]);
        }

        var set = BackupSetManifest.Locate(Options, runKey);
        return SafeFiles.ResolveExistingPrefix(Path.GetDirectoryName(set.Disks[0].Source)!);
    }

    /// <summary>The throwaway's memory (KiB) and vCPUs, from the set's domain XML (what the restored VM will ask for).</summary>
    internal static (long MemoryKiB, int Vcpus) ThrowawaySize(string? domainXml)
    {
        if (string.IsNullOrWhiteSpace(domainXml))
        {
            return (0, 1);
        }

        var root = XDocument.Parse(domainXml).Root;
        var memory = root?.Element("currentMemory") ?? root?.Element("memory");
        var kib = 0L;
        if (memory is not null && long.TryParse(memory.Value.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var amount))
        {
            kib = ((string?)memory.Attribute("unit") ?? "KiB") switch
            {
                "b" or "bytes" => amount / 1024,
                "KB" => amount * 1000 / 1024,
                "MB" => amount * 1000 * 1000 / 1024,
                "M" or "MiB" => amount * 1024,
                "GB" => amount * 1000 * 1000 * 1000 / 1024,
                "G" or "GiB" => amount * 1024 * 1024,
                _ => amount,
            };
        }

        var vcpus = int.TryParse(root?.Element("vcpu")?.Value.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var v) && v > 0 ? v : 1;
        return (kib, vcpus);
    }

    private async Task RunAsync(HostTestRestore entry, RestoreEngine.Plan plan, TestProbe probe, TimeSpan timeout, ActivityContext parent, CancellationToken stop)
    {
        var record = entry.Record;
        using var activity = Telemetry.Source.StartActivity("backup.test", ActivityKind.Internal, parent);
        activity?.SetTag("host", Host);
        activity?.SetTag("vm", entry.VmKey);
        activity?.SetTag("run", record.RunId);
        activity?.SetTag("test", record.Id);
        activity?.SetTag("probe", probe.Name);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(stop);
        deadline.CancelAfter(timeout);
        var ct = deadline.Token;
        var step = "admission";

        // Published on the record only after clean-up: a caller polling sees it Running until all is gone.
        var outcome = TestRestoreOutcome.Failed;
        var reason = "";
        string? lastProbeError = null;
        var clock = Stopwatch.StartNew();
        try
        {
            step = "waiting for a test slot";
            using var slot = await slots.AcquireAsync(ct);
            step = "restore";
            clock.Restart();
            using (Telemetry.Source.StartActivity("backup.test.restore"))
            {
                await new RestoreEngine(Host, hypervisor, Options).ExecuteAsync(plan, ct);
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
            reason = $"cut short in {step}: the host's test-restore grain was deactivated";
        }
        catch (Exception e) when (e is OrchestratorException or HypervisorException or IOException or UnauthorizedAccessException or TestProbeFailedException)
        {
            reason = $"{step}: {e.Message}";
        }
        finally
        {
            using (Telemetry.Source.StartActivity("backup.test.cleanup"))
            {
                await FinishAsync(entry, outcome, reason);
            }

            activity?.SetTag("outcome", record.Outcome == TestRestoreOutcome.Passed ? "passed" : "failed");
            if (record.Outcome != TestRestoreOutcome.Passed)
            {
                activity?.SetStatus(ActivityStatusCode.Error, record.Reason);
            }

            _running.Remove(record.Id);
        }

        await TellVmAsync(entry);
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
    /// Destroys, undefines and deletes what the test created (each call bounded), then records its end. The names stay
    /// persisted until everything is gone: clean-up that failed is tried again by the reconcile tick.
    /// </summary>
    private async Task FinishAsync(HostTestRestore entry, TestRestoreOutcome outcome, string reason)
    {
        var record = entry.Record;
        var cleanupError = await CleanUpAsync(record);
        record.EndedAt = time.GetUtcNow();
        record.CleanedUp = cleanupError is null;
        record.Reason = cleanupError is null ? reason : $"{reason}; clean-up incomplete (retried): {cleanupError}";
        record.Outcome = outcome;
        await _writes.WriteAsync(CancellationToken.None);
        LogTestEnded(logger, record.Id, Host, record.Domain, record.Outcome, record.CleanedUp, record.Reason);
    }

    /// <summary>Destroys and undefines the throwaway domain and deletes every file the test named; null when all is gone.</summary>
    private async Task<string?> CleanUpAsync(TestRestoreRecord record)
    {
        var errors = new List<string>();
        using var bound = new CancellationTokenSource(CleanupCallTimeout);
        try
        {
            var domain = await hypervisor.GetDomainAsync(record.Domain, bound.Token);
            if (domain.State is not (DomainPowerState.ShutOff or DomainPowerState.Crashed))
            {
                await hypervisor.DestroyDomainAsync(record.Domain, bound.Token);
            }

            await hypervisor.UndefineDomainAsync(record.Domain, bound.Token);
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
    /// Tests no task of this activation runs (the silo died mid-test) are cleaned up and recorded failed, "interrupted";
    /// clean-ups that failed are retried; VMs not yet told of an end are told; old ended tests are dropped.
    /// </summary>
    private async Task ReconcileAsync(CancellationToken cancellationToken)
    {
        foreach (var entry in state.State.Tests.ToList())
        {
            if (_running.ContainsKey(entry.Record.Id) || !_reconciling.Add(entry.Record.Id))
            {
                continue;
            }

            try
            {
                if (entry.Record.Outcome == TestRestoreOutcome.Running)
                {
                    LogTestInterrupted(logger, entry.Record.Id, Host, entry.Record.Domain);
                    await FinishAsync(entry, TestRestoreOutcome.Failed, $"interrupted: the silo of host '{Host}' stopped before the test ended (its throwaway VM and files are removed)");
                }
                else if (!entry.Record.CleanedUp && await CleanUpAsync(entry.Record) is null)
                {
                    entry.Record.CleanedUp = true;
                    await _writes.WriteAsync(cancellationToken);
                }
            }
            catch (Exception e) when (e is HypervisorException or OrchestratorException or IOException)
            {
                LogCleanupFailed(logger, entry.Record.Id, Host, e.Message);
                continue;
            }
            finally
            {
                _reconciling.Remove(entry.Record.Id);
            }

            if (entry.Record.EndedAt is { } ended && time.GetUtcNow() - ended > EndedKept && entry.Record.CleanedUp)
            {
                state.State.Tests.Remove(entry);
                await _writes.WriteAsync(cancellationToken);
                continue;
            }

            await TellVmAsync(entry);
        }
    }

    /// <summary>The VM grain reads the ended test (and then forgets it here); best effort, retried by the tick.</summary>
    private async Task TellVmAsync(HostTestRestore entry)
    {
        try
        {
            await GrainFactory.GetGrain<IVirtualMachineGrain>(entry.VmKey).GetTestRestoreAsync(entry.Record.Id).WaitAsync(TellTimeout);
        }
        catch (Exception e) when (e is OrchestratorException or TimeoutException or OrleansException)
        {
            LogTellFailed(logger, entry.Record.Id, entry.VmKey, e.Message);
        }
    }
}
