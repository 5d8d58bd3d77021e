using System.Text.Json;
using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Simulated;

namespace Orchestrator.UnitTests.Cluster;

/// <summary>
/// Incremental backups (backup jobs with checkpoints) on the simulated driver: full, then incrementals backed by their
/// parents' images, every fallback to a full with its reason, full_every, and what invalidates the chain.
/// </summary>
[Collection(ThreeHostClusterCollection.Name)]
public sealed class IncrementalBackupTests(ThreeHostClusterFixture fixture)
{
    private const string Host = "kvm-03";
    private static readonly BackupRequest Incremental = new() { Incremental = true };

    private SimulatedHypervisor Hypervisor => fixture.Hypervisors[Host];

    private async Task<IVirtualMachineGrain> NewVmAsync(string name)
    {
        Hypervisor.AddDomain(name, DomainPowerState.Running, [("vda", "qcow2", 64L << 20), ("vdb", "raw", 16L << 20)]);
        await fixture.Grains.GetGrain<IHostGrain>(Host).SyncInventoryAsync();
        return fixture.Grains.GetGrain<IVirtualMachineGrain>($"{Host}/{name}");
    }

    private static async Task<BackupRunView> BackUpAsync(IVirtualMachineGrain vm, BackupRequest request)
    {
        var run = await vm.StartBackupAsync(request);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!run.IsTerminal)
        {
            Assert.True(DateTime.UtcNow < deadline, $"run stuck at {run.Step}");
            run = await vm.WaitBackupAsync(run.RunKey.Split('/')[^1], run.Version, TimeSpan.FromSeconds(5));
        }

        Assert.True(run.Step == BackupStep.Completed, $"{run.Step}: {run.Error}");
        return run;
    }

    private static JsonElement Manifest(BackupRunView run) =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(run.BackupSetPath, "manifest.json"))).RootElement;

    private static JsonElement Disk(JsonElement manifest, string target) =>
        manifest.GetProperty("disks").EnumerateArray().Single(d => d.GetProperty("target").GetString() == target);

    [Fact]
    public async Task Incremental_FullThenTwoIncrementals_EachBackedByItsParentAndOnlyTheNewestCheckpointKept()
    {
        var vm = await NewVmAsync("inc-chain");

        var full = await BackUpAsync(vm, Incremental);
        Assert.Equal((BackupMethod.BackupJob, "full", (string?)null), (full.Method, full.Level, full.Parent));
        Assert.Contains("no checkpoint yet", full.LevelReason, StringComparison.Ordinal);
        Assert.Null((await Hypervisor.Images.InfoAsync(full.Disks.Single(d => d.Target == "vda").BackupPath, "qcow2")).BackingFile);

        var parent = full;
        for (var i = 1; i <= 2; i++)
        {
            Hypervisor.SimulateGuestWrites("inc-chain", 2L << 20);
            var run = await BackUpAsync(vm, Incremental);
            Assert.Equal(("incremental", parent.RunKey), (run.Level, run.Parent));

            // vda's image is backed by the parent set's vda image (format named; the simulated header resolves the
            // relative entry from the image's directory); the raw vdb is a full copy.
            var vda = run.Disks.Single(d => d.Target == "vda");
            var info = await Hypervisor.Images.InfoAsync(vda.BackupPath, "qcow2");
            Assert.Equal(parent.Disks.Single(d => d.Target == "vda").BackupPath, info.BackingFile);
            Assert.Equal("qcow2", info.BackingFormat);
            Assert.True(vda.BytesCopied < (3L << 20), $"incremental vda holds {vda.BytesCopied} bytes after 2 MiB written");

            var manifest = Manifest(run);
            Assert.Equal(("incremental", parent.RunKey.Split('/')[^1], parent.BackupSetPath), (manifest.GetProperty("level").GetString(), manifest.GetProperty("parent").GetString(), manifest.GetProperty("parent_set").GetString()));
            Assert.Equal("incremental", Disk(manifest, "vda").GetProperty("level").GetString());
            Assert.Equal($"../{parent.RunKey.Split('/')[^1]}/vda.qcow2", Disk(manifest, "vda").GetProperty("backing_file").GetString());
            Assert.Equal("full", Disk(manifest, "vdb").GetProperty("level").GetString());
            Assert.Contains("raw", Disk(manifest, "vdb").GetProperty("level_note").GetString(), StringComparison.Ordinal);
            parent = run;
        }

        var checkpoint = Assert.Single(await Hypervisor.ListCheckpointsAsync("inc-chain"));
        Assert.Equal("orch-" + parent.RunKey.Split('/')[^1], checkpoint.Name);
    }

    [Fact]
    public async Task Incremental_BitmapLost_BecomesAFullWithTheReasonAndTheChainStartsAgain()
    {
        var vm = await NewVmAsync("inc-lost");
        await BackUpAsync(vm, Incremental);
        Hypervisor.SimulateBitmapLoss("inc-lost");

        var run = await BackUpAsync(vm, Incremental);

        Assert.Equal("full", run.Level);
        Assert.Null(run.Parent);
        Assert.Contains("bitmap of checkpoint", run.LevelReason, StringComparison.Ordinal);
        Assert.Equal("orch-" + run.RunKey.Split('/')[^1], Assert.Single(await Hypervisor.ListCheckpointsAsync("inc-lost")).Name);
        Assert.Equal(run.RunKey, (await BackUpAsync(vm, Incremental)).Parent);
    }

    [Fact]
    public async Task Incremental_ParentSetMissing_BecomesAFull()
    {
        var vm = await NewVmAsync("inc-noparent");
        var full = await BackUpAsync(vm, Incremental);
        Directory.Delete(full.BackupSetPath, recursive: true);

        var run = await BackUpAsync(vm, Incremental);

        Assert.Equal("full", run.Level);
        Assert.Contains("is missing", run.LevelReason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Incremental_ParentManifestDamaged_BecomesAFullNamingTheVerification()
    {
        var vm = await NewVmAsync("inc-badparent");
        var full = await BackUpAsync(vm, Incremental);
        await File.WriteAllTextAsync(Path.Combine(full.BackupSetPath, "manifest.json"), "{ not json");

        var run = await BackUpAsync(vm, Incremental);

        Assert.Equal("full", run.Level);
        Assert.Contains("failed verification", run.LevelReason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Incremental_FullEveryTwoRuns_TakesAFullOnTheThird()
    {
        var vm = await NewVmAsync("inc-every");
        var request = Incremental with { FullEveryRuns = 2 };

        string?[] levels = [(await BackUpAsync(vm, request)).Level, (await BackUpAsync(vm, request)).Level, null];
        var third = await BackUpAsync(vm, request);
        levels[2] = third.Level;

        Assert.Equal("full incremental full", string.Join(' ', levels));
        Assert.Contains("full_every 2 runs", third.LevelReason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Incremental_AfterAnOverlayBackup_ChainInvalidatedAndTheNextIsAFull()
    {
        var vm = await NewVmAsync("inc-overlay");
        await BackUpAsync(vm, Incremental);
        var overlay = await BackUpAsync(vm, new BackupRequest());
        Assert.Equal((BackupMethod.Live, (string?)null), (overlay.Method, overlay.Level));

        var run = await BackUpAsync(vm, Incremental);

        Assert.Equal("full", run.Level);
        Assert.Contains($"chain invalidated by overlay backup {overlay.RunKey.Split('/')[^1]}", run.LevelReason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Incremental_AfterAnInternalCheckpointRevert_ChainInvalidated()
    {
        Hypervisor.AddDomain("inc-revert", DomainPowerState.Running, [("vda", "qcow2", 64L << 20)]);
        await fixture.Grains.GetGrain<IHostGrain>(Host).SyncInventoryAsync();
        var vm = fixture.Grains.GetGrain<IVirtualMachineGrain>($"{Host}/inc-revert");
        await vm.CreateCheckpointAsync("before");
        await BackUpAsync(vm, Incremental);
        await vm.RevertCheckpointAsync("before");

        var run = await BackUpAsync(vm, Incremental);

        Assert.Equal("full", run.Level);
        Assert.Contains("internal checkpoint revert to 'before'", run.LevelReason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Incremental_CheckpointLostByLibvirt_DefinedAgainFromTheSavedXmlAndStillIncremental()
    {
        var vm = await NewVmAsync("inc-redefine");
        await BackUpAsync(vm, Incremental);

        // The newest checkpoint's saved XML names the full's as its parent, which its run deleted: libvirt refuses a
        // parent it does not know, so the redefinition must drop it.
        var last = await BackUpAsync(vm, Incremental);
        var name = "orch-" + last.RunKey.Split('/')[^1];
        await Hypervisor.DeleteCheckpointAsync("inc-redefine", name, metadataOnly: true);
        Assert.Empty(await Hypervisor.ListCheckpointsAsync("inc-redefine"));

        var run = await BackUpAsync(vm, Incremental);

        Assert.Equal(("incremental", last.RunKey), (run.Level, run.Parent));
        Assert.Contains("defined again from its saved XML", run.LevelReason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Restore_OfAnIncrementalSet_FlattenedWithItsParentRatherThanCopiedWithItsRelativeBacking()
    {
        var vm = await NewVmAsync("inc-restore");
        await BackUpAsync(vm, Incremental);
        Hypervisor.SimulateGuestWrites("inc-restore");
        var incremental = await BackUpAsync(vm, Incremental);

        var restored = await fixture.Grains.GetGrain<IHostRestoreGrain>(Host).RestoreAsync(new RestoreRequest(incremental.RunKey, "inc-restored", Define: false));

        // Not a byte copy that still names ../<parent run>/vda.qcow2: one standalone image, the parent's layer merged in.
        var vda = await Hypervisor.Images.InfoAsync(restored.Images.Single(i => i.EndsWith("-vda.qcow2", StringComparison.Ordinal)), "qcow2");
        Assert.Null(vda.BackingEntry);
        Assert.NotEqual(await Hypervisor.Images.ComputeSha256Async(incremental.Disks.Single(d => d.Target == "vda").BackupPath), await Hypervisor.Images.ComputeSha256Async(vda.Path));
    }

    [Fact]
    public async Task StartBackup_FullEveryWithoutIncremental_RefusedNamingTheField()
    {
        var vm = await NewVmAsync("inc-invalid");

        var e = await Assert.ThrowsAsync<OrchestratorException>(() => vm.StartBackupAsync(new BackupRequest { FullEveryRuns = 3 }));
        var negative = await Assert.ThrowsAsync<OrchestratorException>(() => vm.StartBackupAsync(Incremental with { FullEveryRuns = -1 }));

        Assert.Equal((ErrorCode.InvalidArgument, "full_every"), (e.Code, e.Field));
        Assert.Equal((ErrorCode.InvalidArgument, "full_every"), (negative.Code, negative.Field));
    }
}
