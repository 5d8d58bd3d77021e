using System.Diagnostics;
using System.Diagnostics.Metrics;
using Orchestrator.Grains;
using Orchestrator.Grains.Checkpoints;
using Orchestrator.Grains.VirtualMachines;
using Orchestrator.Hypervisor;
using static Orchestrator.UnitTests.Checkpoints.CheckpointClusterFixture;

namespace Orchestrator.UnitTests.Checkpoints;

/// <summary>Checkpoint operations of the VM grain against a simulated host, in an in-process cluster.</summary>
[Collection(CheckpointClusterCollection.Name)]
public sealed class CheckpointGrainTests(CheckpointClusterFixture fixture)
{
    private const string QcowRefusal = "internal checkpoints need qcow2; use a live backup, or convert the disk";

    [Fact]
    public async Task CreateCheckpoint_RunningVm_SavesMemoryAndRecordsThePauseFromItsEvents()
    {
        var vm = fixture.Vm(RealHost, "run-1");

        var created = await vm.CreateCheckpointAsync("before-upgrade");

        Assert.Equal("before-upgrade", created.Name);
        Assert.True(created.WithMemory);
        Assert.Equal(CheckpointOrigin.Manual, created.Origin);
        Assert.Equal(VmPowerState.Running, created.StateAtCheckpoint);
        Assert.Equal(PauseSource.Events, created.PauseSource);
        Assert.InRange(created.Pause!.Value, TimeSpan.FromMilliseconds(35), TimeSpan.FromSeconds(5));
        Assert.True(created.Duration >= created.Pause);
        var inHypervisor = Assert.Single(await fixture.Real.ListInternalSnapshotsAsync("run-1"));
        Assert.Equal("before-upgrade", inHypervisor.Name);

        var listed = Assert.Single(await vm.ListCheckpointsAsync());
        Assert.Equal(created.Pause, listed.Pause);
        Assert.Equal(PauseSource.Events, listed.PauseSource);
        Assert.Equal(CheckpointOrigin.Manual, listed.Origin);

        // The simulated host keeps about half the guest's 2 GiB of RAM as saved state, in the first disk.
        Assert.Equal(1L << 30, listed.SizeBytes);
    }

    [Fact]
    public async Task CreateCheckpoint_ShutOffVm_IsDiskOnlyWithoutPause()
    {
        var vm = fixture.Vm(RealHost, "off-1");

        var created = await vm.CreateCheckpointAsync("cold");

        Assert.False(created.WithMemory);
        Assert.Null(created.Pause);
        Assert.Equal(PauseSource.None, created.PauseSource);
        Assert.Equal(VmPowerState.ShutOff, created.StateAtCheckpoint);
        var listed = Assert.Single(await vm.ListCheckpointsAsync());
        Assert.Equal(0, listed.SizeBytes);
        Assert.Equal(DomainPowerState.ShutOff, (await fixture.Real.GetDomainAsync("off-1")).State);
    }

    [Fact]
    public async Task RevertCheckpoint_RunningVm_RestoresTheDiskAndRunsOrPausesAsAsked()
    {
        var vm = fixture.Vm(RealHost, "rev-1");
        var disk = (await fixture.Real.GetDomainAsync("rev-1")).Disks[0].SourcePath;
        var atCheckpoint = await fixture.Real.Images.ComputeSha256Async(disk);
        await vm.CreateCheckpointAsync("good");
        fixture.Real.SimulateGuestWrites("rev-1");
        Assert.NotEqual(atCheckpoint, await fixture.Real.Images.ComputeSha256Async(disk));

        var paused = await vm.RevertCheckpointAsync("good", CheckpointRevertTarget.Paused);

        Assert.Equal(VmPowerState.Paused, paused.PowerState);
        Assert.Equal(DomainPowerState.Paused, (await fixture.Real.GetDomainAsync("rev-1")).State);
        Assert.Equal(atCheckpoint, await fixture.Real.Images.ComputeSha256Async(disk));

        fixture.Real.SimulateGuestWrites("rev-1");
        var running = await vm.RevertCheckpointAsync("good");

        Assert.Equal(VmPowerState.Running, running.PowerState);
        Assert.Equal(DomainPowerState.Running, (await fixture.Real.GetDomainAsync("rev-1")).State);
        Assert.Equal(atCheckpoint, await fixture.Real.Images.ComputeSha256Async(disk));
        Assert.Equal(VmPowerState.Running, (await vm.GetAsync()).PowerState);
    }

    [Fact]
    public async Task RevertCheckpoint_DiskOnly_StaysShutOffByDefaultAndStartsWhenAskedToRun()
    {
        var vm = fixture.Vm(RealHost, "off-2");
        await vm.CreateCheckpointAsync("cold");

        var asSaved = await vm.RevertCheckpointAsync("cold");
        Assert.Equal(VmPowerState.ShutOff, asSaved.PowerState);

        var started = await vm.RevertCheckpointAsync("cold", CheckpointRevertTarget.Running);
        Assert.Equal(VmPowerState.Running, started.PowerState);
        Assert.Equal(DomainPowerState.Running, (await fixture.Real.GetDomainAsync("off-2")).State);
    }

    [Fact]
    public async Task DeleteCheckpoint_Existing_RemovesItFromTheHypervisorAndTheList()
    {
        var vm = fixture.Vm(RealHost, "del-1");
        await vm.CreateCheckpointAsync("a");
        await vm.CreateCheckpointAsync("b");

        await vm.DeleteCheckpointAsync("a");

        Assert.Equal(["b"], (await fixture.Real.ListInternalSnapshotsAsync("del-1")).Select(s => s.Name));
        Assert.Equal(["b"], (await vm.ListCheckpointsAsync()).Select(c => c.Name));
    }

    [Fact]
    public async Task RevertAndDelete_UnknownCheckpoint_NotFoundNamingIt()
    {
        var vm = fixture.Vm(RealHost, "del-1");

        var revert = await Assert.ThrowsAsync<OrchestratorException>(() => vm.RevertCheckpointAsync("never-made"));
        var delete = await Assert.ThrowsAsync<OrchestratorException>(() => vm.DeleteCheckpointAsync("never-made"));

        foreach (var e in new[] { revert, delete })
        {
            Assert.Equal(ErrorCode.NotFound, e.Code);
            Assert.Equal("CHECKPOINT_NOT_FOUND", e.Reason);
            Assert.Contains("'never-made'", e.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task CreateCheckpoint_RawDisk_RefusedWithReasonAndAlternativeAndNothingTouched()
    {
        var vm = fixture.Vm(RealHost, "raw-1");

        var e = await Assert.ThrowsAsync<OrchestratorException>(() => vm.CreateCheckpointAsync("x"));

        Assert.Equal(ErrorCode.FailedPrecondition, e.Code);
        Assert.Equal("RAW_DISK", e.Reason);
        Assert.Contains("disk vdb", e.Message, StringComparison.Ordinal);
        Assert.Contains(QcowRefusal, e.Message, StringComparison.OrdinalIgnoreCase);
        Assert.Empty(await fixture.Real.ListInternalSnapshotsAsync("raw-1"));
        Assert.Equal(DomainPowerState.Running, (await fixture.Real.GetDomainAsync("raw-1")).State);
        Assert.Null((await vm.GetAsync()).Disks.SingleOrDefault(d => d.ChainDepth != 1));
    }

    [Fact]
    public async Task CheckpointOperations_ActiveBackupOverlay_RefusedAndNothingTouched()
    {
        var vm = fixture.Vm(RealHost, "ovl-1");
        await vm.CreateCheckpointAsync("pre-backup");
        var overlay = "/var/lib/libvirt/images/ovl-1-vda.orch-r42.qcow2";
        await fixture.Real.CreateExternalSnapshotAsync("ovl-1", [new OverlaySpec("vda", overlay)]);

        var create = await Assert.ThrowsAsync<OrchestratorException>(() => vm.CreateCheckpointAsync("during-backup"));
        var revert = await Assert.ThrowsAsync<OrchestratorException>(() => vm.RevertCheckpointAsync("pre-backup"));
        var delete = await Assert.ThrowsAsync<OrchestratorException>(() => vm.DeleteCheckpointAsync("pre-backup"));

        foreach (var e in new[] { create, revert, delete })
        {
            Assert.Equal(ErrorCode.FailedPrecondition, e.Code);
            Assert.Equal("BACKUP_OVERLAY_ACTIVE", e.Reason);
            Assert.Contains(overlay, e.Message, StringComparison.Ordinal);
        }

        Assert.Equal(["pre-backup"], (await fixture.Real.ListInternalSnapshotsAsync("ovl-1")).Select(s => s.Name));
        var domain = await fixture.Real.GetDomainAsync("ovl-1");
        Assert.Equal(overlay, domain.Disks[0].SourcePath);
        Assert.Equal(2, domain.Disks[0].ChainDepth);
        Assert.Empty(await fixture.Real.Images.ListSnapshotsAsync(overlay, "qcow2"));
    }

    [Fact]
    public async Task CreateCheckpoint_OtherExternalOverlay_RefusedAsABackingChain()
    {
        var vm = fixture.Vm(RealHost, "ext-1");
        await fixture.Real.CreateExternalSnapshotAsync("ext-1", [new OverlaySpec("vda", "/var/lib/libvirt/images/ext-1-vda.snap1")]);

        var e = await Assert.ThrowsAsync<OrchestratorException>(() => vm.CreateCheckpointAsync("x"));

        Assert.Equal(ErrorCode.FailedPrecondition, e.Code);
        Assert.Equal("EXTERNAL_OVERLAY_ACTIVE", e.Reason);
        Assert.Empty(await fixture.Real.ListInternalSnapshotsAsync("ext-1"));
    }

    [Fact]
    public async Task CreateCheckpoint_AnotherOperationHoldsTheVm_ConflictAndNothingTouched()
    {
        fixture.Real.AddDomain("busy-1", DomainPowerState.Running, [("vda", "qcow2", GiB)]);
        var state = await KnownStateAsync(fixture.Real, "busy-1");
        state.Operation = new VmOperation { Kind = "backup", Id = "run-42", StartedAt = DateTimeOffset.UtcNow };

        // The lock's run is persisted (a lock without one is released on activation: a crash during preflight);
        // its step is one the reconcile does not resume, so the lock stays for the whole test.
        state.ActiveBackup = new Grains.Backups.BackupRunState { RunId = "run-42", Step = BackupStep.Failed };
        await fixture.WriteVmStateAsync(RealHost, "busy-1", state);
        var vm = fixture.Vm(RealHost, "busy-1");

        var create = await Assert.ThrowsAsync<OrchestratorException>(() => vm.CreateCheckpointAsync("x"));
        var schedule = await vm.GetCheckpointScheduleAsync();

        Assert.Equal(ErrorCode.Conflict, create.Code);
        Assert.Equal("VM_BUSY", create.Reason);
        Assert.Contains("backup 'run-42'", create.Message, StringComparison.Ordinal);
        Assert.Empty(await fixture.Real.ListInternalSnapshotsAsync("busy-1"));
        Assert.Null(schedule);
    }

    [Fact]
    public async Task CreateCheckpoint_NameExists_AlreadyExistsNamingTheField()
    {
        var vm = fixture.Vm(RealHost, "dup-1");
        await vm.CreateCheckpointAsync("same");

        var e = await Assert.ThrowsAsync<OrchestratorException>(() => vm.CreateCheckpointAsync("same"));

        Assert.Equal(ErrorCode.AlreadyExists, e.Code);
        Assert.Equal("name", e.Field);
        Assert.Single(await fixture.Real.ListInternalSnapshotsAsync("dup-1"));
    }

    [Theory]
    [InlineData("")]
    [InlineData("has space")]
    [InlineData("-dash-first")]
    [InlineData("slash/in")]
    [InlineData("x123456789012345678901234567890123456789012345678901234567890abcd")]
    public async Task CreateCheckpoint_BadName_InvalidArgumentNamingName(string name)
    {
        var e = await Assert.ThrowsAsync<OrchestratorException>(() => fixture.Vm(RealHost, "dup-1").CreateCheckpointAsync(name));

        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
        Assert.Equal("name", e.Field);
    }

    [Fact]
    public async Task CreateCheckpoint_UnknownVm_NotFound()
    {
        var e = await Assert.ThrowsAsync<OrchestratorException>(() => fixture.Vm(RealHost, "nope").CreateCheckpointAsync("x"));

        Assert.Equal(ErrorCode.NotFound, e.Code);
    }

    [Fact]
    public async Task CreateCheckpoint_TwoWithoutANameInOneSecond_SecondGetsASuffixNotAConflict()
    {
        var vm = fixture.Vm(RealHost, "unnamed-twice");

        // Three in a row: at most a second apart at either end, so at least two share a second.
        var names = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            names.Add((await vm.CreateCheckpointAsync()).Name);
        }

        Assert.Equal(3, names.Distinct(StringComparer.Ordinal).Count());
        Assert.All(names, n => Assert.Matches(@"^cp-\d{8}-\d{6}(-\d+)?$", n));
        Assert.Equal(names.Order(StringComparer.Ordinal), (await vm.ListCheckpointsAsync()).Select(c => c.Name).Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task ListCheckpoints_MixedOrigins_ShowsEveryCheckpointOldestFirstAndForgetsDeletedOnes()
    {
        var vm = fixture.Vm(RealHost, "list-1");
        await fixture.Real.CreateInternalSnapshotAsync("list-1", "by-virsh");
        await Task.Delay(20);
        var picked = await vm.CreateCheckpointAsync();
        await vm.CreateCheckpointAsync("gone-soon");
        await fixture.Real.DeleteInternalSnapshotAsync("list-1", "gone-soon");

        var listed = await vm.ListCheckpointsAsync();

        Assert.StartsWith(CheckpointNames.ManualPrefix, picked.Name, StringComparison.Ordinal);
        Assert.Equal(["by-virsh", picked.Name], listed.Select(c => c.Name));
        Assert.Equal(CheckpointOrigin.External, listed[0].Origin);
        Assert.Equal(PauseSource.Unknown, listed[0].PauseSource);
        Assert.Null(listed[0].Pause);
        Assert.Equal(CheckpointOrigin.Manual, listed[1].Origin);
    }

    [Fact]
    public async Task Activation_CreateCutShortByACrash_AdoptsTheCheckpointAndFreesTheVm()
    {
        fixture.Real.AddDomain("crash-1", DomainPowerState.Running, [("vda", "qcow2", GiB)]);
        await fixture.Real.CreateInternalSnapshotAsync("crash-1", "cp-crash");
        var state = await KnownStateAsync(fixture.Real, "crash-1");
        state.Operation = new VmOperation { Kind = VirtualMachineGrain.CreateKind, Id = "cp-crash", StartedAt = DateTimeOffset.UtcNow.AddMinutes(-3) };
        await fixture.WriteVmStateAsync(RealHost, "crash-1", state);
        var vm = fixture.Vm(RealHost, "crash-1");

        var listed = Assert.Single(await vm.ListCheckpointsAsync());
        var next = await vm.CreateCheckpointAsync("after-crash");

        Assert.Equal("cp-crash", listed.Name);
        Assert.Equal(CheckpointOrigin.Manual, listed.Origin);
        Assert.Equal(PauseSource.Unknown, listed.PauseSource);
        Assert.Equal("after-crash", next.Name);
    }

    [Fact]
    public async Task CreateCheckpoint_EmitsASpanWithThePauseAndCountsMetrics()
    {
        var spans = new List<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name == Telemetry.Name,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a =>
            {
                lock (spans)
                {
                    spans.Add(a);
                }
            },
        };
        ActivitySource.AddActivityListener(listener);
        var measurements = new List<(string Instrument, double Value, Dictionary<string, object?> Tags)>();
        using var meters = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == Telemetry.Name && instrument.Name.StartsWith("orchestrator.checkpoint", StringComparison.Ordinal))
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        meters.SetMeasurementEventCallback<long>((i, v, tags, _) => Record(i.Name, v, tags));
        meters.SetMeasurementEventCallback<double>((i, v, tags, _) => Record(i.Name, v, tags));
        meters.Start();
        var vm = fixture.Vm(RealHost, "tel-1");

        var created = await vm.CreateCheckpointAsync("traced");
        await Assert.ThrowsAsync<OrchestratorException>(() => vm.CreateCheckpointAsync("traced"));

        Activity span;
        lock (spans)
        {
            span = Assert.Single(spans, s => s.OperationName == "checkpoint.create" && (string?)s.GetTagItem("vm") == "tel-1" && s.Status != ActivityStatusCode.Error);
            Assert.Contains(spans, s => s.OperationName == "checkpoint.create" && (string?)s.GetTagItem("vm") == "tel-1" && s.Status == ActivityStatusCode.Error);
        }

        Assert.Equal(RealHost, span.GetTagItem("host"));
        Assert.Equal("traced", span.GetTagItem("checkpoint"));
        Assert.Equal("events", span.GetTagItem("pause_source"));
        Assert.Equal(created.Pause!.Value.TotalMilliseconds, (double)span.GetTagItem("pause_ms")!);
        lock (measurements)
        {
            var mine = measurements.Where(m => (string?)m.Tags.GetValueOrDefault("host") == RealHost).ToList();
            Assert.Contains(mine, m => m.Instrument == CheckpointMetrics.TakenName && m.Value == 1 && (string?)m.Tags["origin"] == "manual");
            Assert.Contains(mine, m => m.Instrument == CheckpointMetrics.PauseName && m.Value == created.Pause.Value.TotalMilliseconds);
            Assert.Contains(mine, m => m.Instrument == CheckpointMetrics.FailuresName && (string?)m.Tags["reason"] == nameof(ErrorCode.AlreadyExists) && (string?)m.Tags["operation"] == "create");
        }

        void Record(string instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            var dictionary = new Dictionary<string, object?>();
            foreach (var tag in tags)
            {
                dictionary[tag.Key] = tag.Value;
            }

            lock (measurements)
            {
                measurements.Add((instrument, value, dictionary));
            }
        }
    }
}
