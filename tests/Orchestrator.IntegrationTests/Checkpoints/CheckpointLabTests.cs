using Google.Rpc;
using Grpc.Core;
using Grpc.Net.Client;
using Orchestrator.Api.V1;
using Orchestrator.IntegrationTests.Infrastructure;

namespace Orchestrator.IntegrationTests.Checkpoints;

/// <summary>
/// A lab host "ckl" with counter-writing guests, and a real silo process (embedded mode) connected to its libvirt.
/// Everything goes through gRPC, as a user would; the lab scripts, virsh and qemu-img only set up and look.
/// </summary>
public sealed class CheckpointLabFixture : IAsyncLifetime
{
    public const string Host = "ckl";
    public const string RunningVm = "ckl-run";
    public const string OfflineVm = "ckl-off";
    public const string RawVm = "ckl-raw";
    public const string OverlayVm = "ckl-ovl";

    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"orchestrator-ckl-{Guid.NewGuid():N}");

    public LabHost Lab { get; } = new(Host);

    public SiloProcess Silo { get; private set; } = null!;

    public CheckpointService.CheckpointServiceClient Checkpoints { get; private set; } = null!;

    /// <summary>The counter at which <see cref="OfflineVm"/> was shut off by the fixture.</summary>
    public long OfflineSeq { get; private set; }

    public static string Key(string vm) => $"{Host}/{vm}";

    public async Task InitializeAsync()
    {
        await Lab.StartAsync();
        await Lab.CreateVmAsync(RunningVm, "qcow2:64M", intervalMs: 100);
        await Lab.CreateVmAsync(OfflineVm, "qcow2:64M", intervalMs: 100);
        await Lab.CreateVmAsync(RawVm, "raw:64M qcow2:64M", intervalMs: 500);
        await Lab.CreateVmAsync(OverlayVm, "qcow2:64M", intervalMs: 500);
        OfflineSeq = await Lab.WaitForSeqAsync(OfflineVm, 10);
        await Lab.DestroyVmAsync(OfflineVm);

        Silo = new SiloProcess(Host, _dir, new Dictionary<string, string>
        {
            ["Orchestrator__Host__Uri"] = Lab.Uri,
            ["Orchestrator__Host__SeedDemo"] = "false",
        });
        Silo.Start();
        await Silo.WaitReadyAsync(TimeSpan.FromMinutes(3));
        Checkpoints = new CheckpointService.CheckpointServiceClient(GrpcChannel.ForAddress(Silo.GrpcEndpoint));
        var fleet = GrpcClients.Fleet(Silo.GrpcEndpoint);
        foreach (var vm in new[] { RunningVm, OfflineVm, RawVm, OverlayVm })
        {
            await fleet.WaitForVmAsync(Key(vm), TimeSpan.FromMinutes(2));
        }
    }

    public async Task DisposeAsync()
    {
        try
        {
            if (Silo is not null)
            {
                await Silo.DisposeAsync();
            }
        }
        finally
        {
            await Lab.DisposeAsync();
            if (Directory.Exists(_dir))
            {
                Directory.Delete(_dir, recursive: true);
            }
        }
    }
}

/// <summary>Checkpoints on real QEMU guests through the orchestrator (gRPC and the CLI).</summary>
public sealed class CheckpointLabTests(CheckpointLabFixture fixture) : IClassFixture<CheckpointLabFixture>
{
    private static readonly TimeSpan Slow = TimeSpan.FromMinutes(2);

    private LabHost Lab => fixture.Lab;

    private CheckpointService.CheckpointServiceClient Client => fixture.Checkpoints;

    [Fact]
    public async Task RunningGuest_CreateWriteOnRevert_DiskBackAtTheCheckpointAndTheGuestCountsOnFromThere()
    {
        const string vm = CheckpointLabFixture.RunningVm;
        var key = CheckpointLabFixture.Key(vm);
        var disk = Lab.DiskPath(vm, "vda", "qcow2");
        await Lab.WaitForSeqAsync(vm, 20);

        var created = (await Client.CreateCheckpointAsync(new CreateCheckpointRequest { Key = key, Name = "cp1" }, deadline: Deadline())).Checkpoint;

        Assert.True(created.WithMemory);
        Assert.Equal(PowerState.Running, created.State);
        Assert.Equal(PauseSource.Events, created.PauseSource);
        Assert.InRange(created.PauseMs, 1, 10_000);
        Assert.Contains("cp1", await Lab.QemuImgSnapshotsAsync(disk));
        var listed = Assert.Single((await Client.ListCheckpointsAsync(new ListCheckpointsRequest { Key = key })).Checkpoints);
        Assert.Equal(created.PauseMs, listed.PauseMs);
        Assert.Equal(CheckpointOrigin.Manual, listed.Origin);

        // The guest's memory (128 MiB, much of it untouched) is saved inside the qcow2.
        Assert.InRange(listed.SizeBytes, 8L << 20, 128L << 20);

        // What the checkpoint holds on disk: a consistent run of records up to the checkpoint's counter.
        var atCheckpoint = await Lab.CounterCheckSnapshotAsync(disk, "cp1");
        Assert.True(atCheckpoint.Consistent, atCheckpoint.Json);
        var checkpointSeq = atCheckpoint.MaxSeq;

        // The guest writes on.
        var later = await Lab.WaitForSeqAsync(vm, checkpointSeq + 30);

        // Revert, paused: the VM stops at the checkpoint. A paused QEMU has flushed its images, so the disk reads true.
        var paused = await Client.RevertCheckpointAsync(new RevertCheckpointRequest { Key = key, Name = "cp1", Target = RevertTarget.Paused }, deadline: Deadline());
        Assert.Equal(PowerState.Paused, paused.PowerState);
        Assert.StartsWith("paused", await Lab.DomainStateAsync(vm), StringComparison.Ordinal);
        var afterRevert = await Lab.CounterCheckAsync(disk);
        Assert.True(afterRevert.Consistent, afterRevert.Json);
        Assert.Equal(checkpointSeq, afterRevert.MaxSeq);

        // Revert, running: the guest resumes from the checkpoint's memory. It counts on from the checkpoint's
        // counter (not from where it had got to) and it does not boot again (no "init start" on its console).
        var consoleOffset = new FileInfo(Lab.ConsolePath(vm)).Length;
        var running = await Client.RevertCheckpointAsync(new RevertCheckpointRequest { Key = key, Name = "cp1", Target = RevertTarget.Running }, deadline: Deadline());
        Assert.Equal(PowerState.Running, running.PowerState);
        var seqs = await WaitForConsoleSeqsAsync(vm, consoleOffset, 2);
        Assert.False(seqs.Booted, "the guest booted again instead of resuming from the checkpoint's memory");
        // It prints every 10th record; the checkpoint may have caught it between writing a 10th and printing it.
        Assert.InRange(seqs.Lines[0].Seq, checkpointSeq, checkpointSeq + 10);
        Assert.True(seqs.Lines[0].Seq < later, $"first record after the revert {seqs.Lines[0].Seq} should be below {later}");

        // And what it writes now continues the checkpoint's run on disk (read while paused).
        await Lab.VirshAsync("suspend", vm);
        var continued = await Lab.CounterCheckAsync(disk);
        await Lab.VirshAsync("resume", vm);
        Assert.True(continued.Consistent, continued.Json);
        Assert.True(continued.MaxSeq >= seqs.Lines[^1].Seq, continued.Json);

        // Delete removes it from the image.
        await Client.DeleteCheckpointAsync(new DeleteCheckpointRequest { Key = key, Name = "cp1" }, deadline: Deadline());
        Assert.DoesNotContain("cp1", await Lab.QemuImgSnapshotsAsync(disk));
        Assert.Empty((await Client.ListCheckpointsAsync(new ListCheckpointsRequest { Key = key })).Checkpoints);
    }

    [Fact]
    public async Task ShutOffGuest_DiskOnlyCreateRevertDelete()
    {
        const string vm = CheckpointLabFixture.OfflineVm;
        var key = CheckpointLabFixture.Key(vm);
        var disk = Lab.DiskPath(vm, "vda", "qcow2");
        var before = await Lab.CounterCheckAsync(disk);
        Assert.True(before.Consistent, before.Json);

        var created = (await Client.CreateCheckpointAsync(new CreateCheckpointRequest { Key = key, Name = "cold" }, deadline: Deadline())).Checkpoint;

        Assert.False(created.WithMemory);
        Assert.Equal(PowerState.ShutOff, created.State);
        Assert.Equal(PauseSource.None, created.PauseSource);
        Assert.False(created.HasPauseMs);
        Assert.Contains("cold", await Lab.QemuImgSnapshotsAsync(disk));
        var listed = Assert.Single((await Client.ListCheckpointsAsync(new ListCheckpointsRequest { Key = key })).Checkpoints);
        Assert.Equal(0, listed.SizeBytes);

        // The guest runs again and writes on, then is shut off.
        await Lab.StartVmAsync(vm);
        await Lab.WaitForSeqAsync(vm, before.MaxSeq + 15);
        await Lab.DestroyVmAsync(vm);
        var moved = await Lab.CounterCheckAsync(disk);
        Assert.True(moved.MaxSeq >= before.MaxSeq + 15, moved.Json);

        var reverted = await Client.RevertCheckpointAsync(new RevertCheckpointRequest { Key = key, Name = "cold" }, deadline: Deadline());

        Assert.Equal(PowerState.ShutOff, reverted.PowerState);
        var after = await Lab.CounterCheckAsync(disk);
        Assert.True(after.Consistent, after.Json);
        Assert.Equal(before.MaxSeq, after.MaxSeq);

        await Client.DeleteCheckpointAsync(new DeleteCheckpointRequest { Key = key, Name = "cold" }, deadline: Deadline());
        Assert.DoesNotContain("cold", await Lab.QemuImgSnapshotsAsync(disk));
    }

    [Fact]
    public async Task RawDiskGuest_Refused_NothingTouched()
    {
        const string vm = CheckpointLabFixture.RawVm;

        var e = await Assert.ThrowsAsync<RpcException>(async () => await Client.CreateCheckpointAsync(new CreateCheckpointRequest { Key = CheckpointLabFixture.Key(vm), Name = "nope" }, deadline: Deadline()));

        Assert.Equal(StatusCode.FailedPrecondition, e.StatusCode);
        Assert.Equal("RAW_DISK", e.GetRpcStatus()!.GetDetail<ErrorInfo>().Reason);
        Assert.Contains("internal checkpoints need qcow2; use a live backup, or convert the disk", e.Status.Detail, StringComparison.OrdinalIgnoreCase);
        Assert.Empty(await Lab.QemuImgSnapshotsAsync(Lab.DiskPath(vm, "vdb", "qcow2")));
        Assert.Equal("", (await Lab.VirshAsync("snapshot-list", vm, "--name")).Trim());

        // Never paused: a guest that was suspended and resumed reads "running (unpaused)".
        Assert.Equal("running (booted)", await Lab.DomainStateAsync(vm));
    }

    [Fact]
    public async Task GuestWithActiveBackupOverlay_Refused_NothingTouched()
    {
        const string vm = CheckpointLabFixture.OverlayVm;
        var basePath = Lab.DiskPath(vm, "vda", "qcow2");
        var overlay = Path.Combine(Lab.ImagesDir, $"{vm}-vda.orch-t1.qcow2");
        await Lab.WaitForSeqAsync(vm, 2);
        await Lab.VirshAsync("snapshot-create-as", vm, "--disk-only", "--atomic", "--no-metadata", "--diskspec", $"vda,file={overlay}");
        try
        {
            var e = await Assert.ThrowsAsync<RpcException>(async () => await Client.CreateCheckpointAsync(new CreateCheckpointRequest { Key = CheckpointLabFixture.Key(vm), Name = "nope" }, deadline: Deadline()));

            Assert.Equal(StatusCode.FailedPrecondition, e.StatusCode);
            Assert.Equal("BACKUP_OVERLAY_ACTIVE", e.GetRpcStatus()!.GetDetail<ErrorInfo>().Reason);
            Assert.Contains(overlay, e.Status.Detail, StringComparison.Ordinal);
            Assert.Empty(await Lab.QemuImgSnapshotsAsync(basePath));
            Assert.Empty(await Lab.QemuImgSnapshotsAsync(overlay));
            Assert.Equal("", (await Lab.VirshAsync("snapshot-list", vm, "--name")).Trim());
            Assert.Contains(overlay, await Lab.VirshAsync("domblklist", vm), StringComparison.Ordinal);
            Assert.Equal("running (booted)", await Lab.DomainStateAsync(vm));
        }
        finally
        {
            await Lab.VirshAsync("blockcommit", vm, "vda", "--active", "--pivot", "--wait");
            File.Delete(overlay);
        }
    }

    [Theory]
    [InlineData("0 * * *", "UTC", 3, "schedule.cron")]
    [InlineData("0 * * * *", "Atlantis/Capital", 3, "schedule.time_zone")]
    [InlineData("0 * * * *", "UTC", -2, "retention.keep_last")]
    public async Task SetSchedule_BadInput_InvalidArgumentNamingTheField(string cron, string zone, int keepLast, string field)
    {
        var request = new SetCheckpointScheduleRequest
        {
            Key = CheckpointLabFixture.Key(CheckpointLabFixture.RunningVm),
            Schedule = new CheckpointSchedule { Cron = cron, TimeZone = zone },
            Retention = new RetentionPolicy { KeepLast = keepLast, Daily = 7 },
        };

        var e = await Assert.ThrowsAsync<RpcException>(async () => await Client.SetCheckpointScheduleAsync(request, deadline: Deadline()));

        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        var violation = Assert.Single(e.GetRpcStatus()!.GetDetail<BadRequest>().FieldViolations);
        Assert.Equal(field, violation.Field);
        Assert.StartsWith(field + ": ", e.Status.Detail, StringComparison.Ordinal);
        await Assert.ThrowsAsync<RpcException>(async () => await Client.GetCheckpointScheduleAsync(new GetCheckpointScheduleRequest { Key = request.Key }));
    }

    [Fact]
    public async Task Cli_BadCron_ExitsInvalidArgumentNamingTheField()
    {
        var result = await ProcessRunner.RunAsync(
            "dotnet",
            [Repo.CliDll, "checkpoint", "schedule", "set", CheckpointLabFixture.Key(CheckpointLabFixture.RunningVm), "--cron", "99 * * * *", "--keep-last", "2", "--endpoint", fixture.Silo.GrpcEndpoint]);

        Assert.Equal(5, result.ExitCode);
        Assert.Empty(result.StandardOutput);
        Assert.Contains("field schedule.cron: ", result.StandardError, StringComparison.Ordinal);
    }

    private static DateTime Deadline() => DateTime.UtcNow.Add(Slow);

    private async Task<(IReadOnlyList<(long Seq, double Uptime)> Lines, bool Booted)> WaitForConsoleSeqsAsync(string vm, long offset, int count)
    {
        var deadline = DateTime.UtcNow + Slow;
        while (true)
        {
            var lines = Lab.ConsoleSeqsAfter(vm, offset, out var booted);
            if (lines.Count >= count || booted)
            {
                return (lines, booted);
            }

            Assert.True(DateTime.UtcNow < deadline, $"the guest printed {lines.Count} records after the revert in {Slow}");
            await Task.Delay(250);
        }
    }
}
