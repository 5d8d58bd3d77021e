using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orchestrator.Grains.Placement;
using Orchestrator.Grains.Policies;
using Orchestrator.Grains.Storage;

namespace Orchestrator.Grains.Fleet;

/// <summary>
/// One host's slice of the fleet's VM index (see <see cref="IHostIndexGrain"/>). Host-preferred, not host-affine:
/// its state is in grain storage, not on the hypervisor, so while the host is down it activates on the calling silo
/// and still answers selection and compliance.
/// <para>
/// Persistence cost does not grow with the run. Inventory changes (a VM appears, vanishes, changes uuid or labels)
/// are rare and written at once. Protection times arrive once per VM per run: they are marked dirty and stored in one
/// write once no new one came for <see cref="FleetIndexOptions.ProtectionFlushQuietDelay"/>, at the latest
/// <see cref="FleetIndexOptions.ProtectionFlushMaxDelay"/> after the first unsaved one, and when the activation goes.
/// </para>
/// <para>
/// Losing an unsaved time in a crash is safe: the index is a copy. The VM grain is authoritative (its own state holds
/// its completed backups and checkpoints), and every inventory sync of the host carries each VM's LastBackupAt and
/// LastCheckpointAt, which this index applies with times only moving forward; so the next sync after the crash
/// restores what was lost, and nothing older can overwrite a newer time. Until then compliance shows the VM's previous
/// time (at worst out of RPO for a sync interval), never a time that did not happen.
/// </para>
/// </summary>
[HostPreferredPlacement]
internal sealed partial class HostIndexGrain(
    [PersistentState("hostindex", StorageNames.Default)] IPersistentState<HostIndexState> state,
    IOptions<FleetIndexOptions> options,
    TimeProvider time,
    ILogger<HostIndexGrain> logger) : Grain, IHostIndexGrain
{
    private readonly StateWriteGate _writes = new(() => state.WriteStateAsync());

    private IGrainTimer? _flushTimer;

    /// <summary>When the oldest unsaved protection time arrived (timestamp), or null when everything is stored.</summary>
    private long? _dirtySince;

    /// <summary>When the newest unsaved protection time arrived (timestamp).</summary>
    private long _lastChange;

    private string Host => this.GetPrimaryKeyString();

    private FleetIndexOptions Options => options.Value;

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        GrainKeys.ValidateHost(Host);
        _flushTimer = this.RegisterGrainTimer(
            static (grain, _) => grain.FlushWhenDueAsync(),
            this,
            new GrainTimerCreationOptions(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan) { KeepAlive = false });
        return Task.CompletedTask;
    }

    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        // Unsaved times are stored before the activation goes (a crash skips this; see the class comment).
        if (_dirtySince is not null)
        {
            await FlushAsync().WaitAsync(cancellationToken).ContinueWith(_ => { }, TaskScheduler.Current);
        }

        await _writes.DrainAsync().WaitAsync(cancellationToken).ContinueWith(_ => { }, TaskScheduler.Current);
    }

    public async Task ReportInventoryAsync(IReadOnlyList<VmIndexEntry> vms, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(vms);
        Validate(vms);
        var index = state.State.Vms;
        var change = VmIndex.Change.None;
        var reported = new HashSet<string>(StringComparer.Ordinal);
        foreach (var vm in vms)
        {
            reported.Add(vm.Name);
            change |= Apply(vm);
        }

        foreach (var record in index.Values.Where(r => r.Present && !reported.Contains(r.Name)))
        {
            record.Present = false;
            change |= VmIndex.Change.Inventory;
        }

        await SaveAsync(change, cancellationToken);
    }

    public Task RecordProtectionAsync(string vm, PolicyKind kind, DateTimeOffset at, CancellationToken cancellationToken = default)
    {
        // A VM not synced yet: the host's next inventory sync brings it with this time.
        if (state.State.Vms.TryGetValue(vm, out var record) && VmIndex.MoveForward(record, kind, at))
        {
            MarkDirty();
        }

        return Task.CompletedTask;
    }

    public Task RecordProvenRestoreAsync(string vm, DateTimeOffset at, double bootSeconds, CancellationToken cancellationToken = default)
    {
        if (state.State.Vms.TryGetValue(vm, out var record) && (record.ProvenRestoreAt is null || record.ProvenRestoreAt < at))
        {
            record.ProvenRestoreAt = at;
            record.ProvenBootSeconds = bootSeconds;
            MarkDirty();
        }

        return Task.CompletedTask;
    }

    public async Task MergeAsync(IReadOnlyList<VmIndexEntry> vms, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(vms);
        Validate(vms);
        var change = VmIndex.Change.None;
        foreach (var vm in vms)
        {
            change |= Apply(vm);
        }

        // A hand-over is stored at once: the fleet grain clears its copy once this returns.
        await SaveAsync(change == VmIndex.Change.None ? change : VmIndex.Change.Inventory, cancellationToken);
    }

    public Task<IReadOnlyList<VmIndexEntry>> ListAsync(CancellationToken cancellationToken = default) =>
        Task.FromResult<IReadOnlyList<VmIndexEntry>>([.. Ordered().Select(r => VmIndex.ToEntry(r, Host))]);

    public Task<IReadOnlyList<VmIndexEntry>> SelectAsync(PolicySelector selector, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(selector);
        if (!VmIndex.MayMatchHost(selector, Host))
        {
            return Task.FromResult<IReadOnlyList<VmIndexEntry>>([]);
        }

        return Task.FromResult<IReadOnlyList<VmIndexEntry>>([.. Ordered()
            .Where(r => r.Present && PolicySelectorMatcher.Matches(selector, Host, r.Name, r.Labels))
            .Select(r => VmIndex.ToEntry(r, Host))]);
    }

    public Task<HostCompliance> GetComplianceAsync(IReadOnlyList<PolicyRegistration> policies, DateTimeOffset at, bool withRows = true, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(policies);
        var counts = ComplianceCounts.Empty(policies.Select(p => p.Spec.Name));
        var rows = new List<VmCompliance>(withRows ? state.State.Vms.Count : 0);
        foreach (var record in Ordered())
        {
            var vm = VmIndex.Assess(policies, Host, record, at);
            counts.Count(vm);
            if (withRows)
            {
                rows.Add(vm);
            }
        }

        return Task.FromResult(new HostCompliance(Host, rows, counts));
    }

    private IEnumerable<VmIndexRecord> Ordered() => state.State.Vms.Values.OrderBy(v => v.Name, StringComparer.Ordinal);

    private void Validate(IReadOnlyList<VmIndexEntry> vms)
    {
        for (var i = 0; i < vms.Count; i++)
        {
            if (vms[i].Host != Host)
            {
                throw OrchestratorException.InvalidArgument($"vms[{i}].host", $"{OrchestratorException.Quote(vms[i].Host)} is not this index's host '{Host}'");
            }

            GrainKeys.ValidateVmName(vms[i].Name, $"vms[{i}].name");
        }
    }

    private VmIndex.Change Apply(VmIndexEntry vm)
    {
        if (!state.State.Vms.TryGetValue(vm.Name, out var record))
        {
            state.State.Vms[vm.Name] = record = new VmIndexRecord { Host = Host, Name = vm.Name };
            VmIndex.Apply(record, vm);
            return VmIndex.Change.Inventory;
        }

        return VmIndex.Apply(record, vm);
    }

    /// <summary>Inventory changes are stored now (with any unsaved times); protection times only marked for the next flush.</summary>
    private async Task SaveAsync(VmIndex.Change change, CancellationToken cancellationToken)
    {
        if (change.HasFlag(VmIndex.Change.Inventory))
        {
            _dirtySince = null;
            try
            {
                await _writes.WriteAsync(cancellationToken);
            }
            catch
            {
                // Not stored, and memory already holds the change (the next sync finds nothing new): the flush timer
                // retries storing the whole state.
                MarkDirty();
                throw;
            }
        }
        else if (change.HasFlag(VmIndex.Change.Protection))
        {
            MarkDirty();
        }
    }

    private void MarkDirty()
    {
        _lastChange = time.GetTimestamp();
        if (_dirtySince is null)
        {
            _dirtySince = _lastChange;
            _flushTimer?.Change(Options.ProtectionFlushQuietDelay, Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>The flush timer: stores the unsaved times once they went quiet or waited the longest allowed, else looks again then.</summary>
    private async Task FlushWhenDueAsync()
    {
        if (_dirtySince is not { } since)
        {
            return;
        }

        var quietFor = time.GetElapsedTime(_lastChange);
        var dirtyFor = time.GetElapsedTime(since);
        if (quietFor < Options.ProtectionFlushQuietDelay && dirtyFor < Options.ProtectionFlushMaxDelay)
        {
            var wait = Min(Options.ProtectionFlushQuietDelay - quietFor, Options.ProtectionFlushMaxDelay - dirtyFor);
            _flushTimer?.Change(wait, Timeout.InfiniteTimeSpan);
            return;
        }

        await FlushAsync();
    }

    private async Task FlushAsync()
    {
        if (_dirtySince is not { } since)
        {
            return;
        }

        _dirtySince = null;
        try
        {
            await _writes.WriteAsync();
        }
        catch (Exception e)
        {
            LogFlushFailed(logger, Host, e.Message);
            if (_dirtySince is null)
            {
                _dirtySince = since;
                _flushTimer?.Change(Options.ProtectionFlushQuietDelay, Timeout.InfiniteTimeSpan);
            }
        }
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;
}
