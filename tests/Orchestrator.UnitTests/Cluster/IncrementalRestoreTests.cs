using System.Text.Json.Nodes;
using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Simulated;

namespace Orchestrator.UnitTests.Cluster;

/// <summary>
/// Restore of any point of an incremental chain and <c>backup verify</c> of a whole chain, on the simulated driver
/// (its images' headers and contents in memory, the sets' manifests real files): each point flattens from its layers,
/// and every hostile or corrupt chain (a backing outside the chain, a json: backing, a loop, a missing or foreign
/// parent, checkpoints that do not line up, a raw disk claiming a backing, an altered layer) is refused naming the set
/// and the disk, with nothing written.
/// </summary>
[Collection(ThreeHostClusterCollection.Name)]
public sealed class IncrementalRestoreTests(ThreeHostClusterFixture fixture)
{
    private const string Host = "kvm-03";
    private const string Images = "/var/lib/libvirt/images";
    private static readonly BackupRequest Incremental = new() { Incremental = true };

    private SimulatedHypervisor Hypervisor => fixture.Hypervisors[Host];

    private IHostRestoreGrain Restorer => fixture.Grains.GetGrain<IHostRestoreGrain>(Host);

    /// <summary>A VM with a qcow2 and a raw disk: a full, then <paramref name="incrementals"/> incrementals, the guest writing before each.</summary>
    private async Task<List<BackupRunView>> ChainAsync(string name, int incrementals)
    {
        Hypervisor.AddDomain(name, DomainPowerState.Running, [("vda", "qcow2", 64L << 20), ("vdb", "raw", 16L << 20)]);
        await fixture.Grains.GetGrain<IHostGrain>(Host).SyncInventoryAsync();
        var vm = fixture.Grains.GetGrain<IVirtualMachineGrain>($"{Host}/{name}");
        var runs = new List<BackupRunView>();
        for (var i = 0; i <= incrementals; i++)
        {
            Hypervisor.SimulateGuestWrites(name, 1L << 20);
            var run = await vm.StartBackupAsync(Incremental);
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (!run.IsTerminal)
            {
                Assert.True(DateTime.UtcNow < deadline, $"run stuck at {run.Step}");
                run = await vm.WaitBackupAsync(run.RunKey.Split('/')[^1], run.Version, TimeSpan.FromSeconds(5));
            }

            Assert.True(run.Step == BackupStep.Completed, $"{run.Step}: {run.Error}");
            runs.Add(run);
        }

        Assert.Equal(["full", .. Enumerable.Repeat("incremental", incrementals)], runs.Select(r => r.Level));
        return runs;
    }

    private static string Image(BackupRunView run, string disk) => run.Disks.Single(d => d.Target == disk).BackupPath;

    private static void EditManifest(BackupRunView run, Action<JsonObject> edit)
    {
        var path = Path.Combine(run.BackupSetPath, "manifest.json");
        var manifest = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(manifest);
        File.WriteAllText(path, manifest.ToJsonString());
    }

    private static JsonObject DiskOf(JsonObject manifest, string target) =>
        manifest["disks"]!.AsArray().Select(d => d!.AsObject()).Single(d => (string?)d["target"] == target);

    /// <summary>Restores <paramref name="top"/> as <paramref name="newName"/>; expects a refusal naming the set (and the disk when given); nothing written.</summary>
    private async Task<OrchestratorException> RefusedAsync(BackupRunView top, string newName, string expected, BackupRunView blamed, string? disk = "vda")
    {
        var e = await Assert.ThrowsAsync<OrchestratorException>(() => Restorer.RestoreAsync(new RestoreRequest(top.RunKey, newName, Define: true)));
        Assert.Equal((ErrorCode.FailedPrecondition, "key"), (e.Code, e.Field));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        Assert.Contains($"backup set {blamed.RunKey}", e.Message, StringComparison.Ordinal);
        if (disk is not null)
        {
            Assert.Contains($"disk {disk}", e.Message, StringComparison.Ordinal);
        }

        Assert.False(await Hypervisor.Images.ExistsAsync($"{Images}/{newName}-vda.qcow2"), "an image was written");
        Assert.False(await Hypervisor.Images.ExistsAsync($"{Images}/{newName}-vdb.raw"), "an image was written");
        Assert.DoesNotContain(await Hypervisor.ListDomainsAsync(), d => d.Name == newName);
        return e;
    }

    [Fact]
    public async Task Restore_EachPointOfAChain_FlattenedStandaloneFromItsLayersAndTheRawDiskCopiedWhole()
    {
        var runs = await ChainAsync("ir-points", 2);

        var contents = new List<string>();
        for (var i = 0; i < runs.Count; i++)
        {
            var restored = await Restorer.RestoreAsync(new RestoreRequest(runs[i].RunKey, $"ir-points-r{i}", Define: true));

            Assert.Equal([$"{Images}/ir-points-r{i}-vda.qcow2", $"{Images}/ir-points-r{i}-vdb.raw"], restored.Images.Order(StringComparer.Ordinal));
            var vda = await Hypervisor.Images.InfoAsync(restored.Images[0], "qcow2");
            Assert.Null(vda.BackingEntry); // standalone: the restored VM never depends on the set
            Assert.Equal(64L << 20, vda.VirtualSize);
            Assert.Equal(await Hypervisor.Images.ComputeSha256Async(Image(runs[i], "vdb")), await Hypervisor.Images.ComputeSha256Async(restored.Images[1]));
            contents.Add(await Hypervisor.Images.ComputeSha256Async(restored.Images[0]));
            Assert.Contains(await Hypervisor.ListDomainsAsync(), d => d.Name == $"ir-points-r{i}");
        }

        // Three points, three different disks (each flattened from a different stack of layers).
        Assert.Equal(3, contents.Distinct().Count());
    }

    [Fact]
    public async Task Restore_HeaderBackingOutsideTheChain_Refused()
    {
        var runs = await ChainAsync("ir-outside", 1);
        await Hypervisor.Images.SetBackingAsync(Image(runs[1], "vda"), "../../../../etc/vda.qcow2", "qcow2");

        await RefusedAsync(runs[1], "ir-outside-r", "its image header names backing '../../../../etc/vda.qcow2' (qcow2); the chain needs", runs[1]);
    }

    [Fact]
    public async Task Restore_HeaderWithAJsonBacking_Refused()
    {
        var runs = await ChainAsync("ir-json", 1);
        await Hypervisor.Images.SetBackingAsync(Image(runs[1], "vda"), """json:{"driver":"qcow2","file":{"driver":"file","filename":"/etc/shadow"}}""", "qcow2");

        await RefusedAsync(runs[1], "ir-json-r", "a json: backing specification (never followed)", runs[1]);
    }

    [Fact]
    public async Task Restore_FullWhoseHeaderNamesABacking_Refused()
    {
        var runs = await ChainAsync("ir-fullbacked", 1);
        await Hypervisor.Images.SetBackingAsync(Image(runs[0], "vda"), "/var/lib/libvirt/images/other-vm.qcow2", "qcow2");

        await RefusedAsync(runs[1], "ir-fullbacked-r", "the chain needs no backing", runs[0]);
    }

    [Fact]
    public async Task Restore_ParentSetMissing_Refused()
    {
        var runs = await ChainAsync("ir-missing", 2);
        Directory.Delete(runs[1].BackupSetPath, recursive: true);

        await RefusedAsync(runs[2], "ir-missing-r", "is missing or a symbolic link", runs[2], disk: null);
    }

    [Fact]
    public async Task Restore_ParentSetReplacedByASymbolicLink_Refused()
    {
        var runs = await ChainAsync("ir-link", 1);
        var elsewhere = runs[0].BackupSetPath + "-moved";
        Directory.Move(runs[0].BackupSetPath, elsewhere);
        Directory.CreateSymbolicLink(runs[0].BackupSetPath, elsewhere);

        await RefusedAsync(runs[1], "ir-link-r", "is missing or a symbolic link", runs[1], disk: null);
    }

    [Fact]
    public async Task Restore_ChainThatLoops_Refused()
    {
        var runs = await ChainAsync("ir-loop", 2);

        // The full made to claim the newest incremental as its parent: set 2 -> set 1 -> set 0 -> set 2.
        EditManifest(runs[0], m =>
        {
            m["level"] = "incremental";
            m["parent"] = runs[2].RunKey.Split('/')[^1];
            m["parent_run"] = runs[2].RunKey;
            m["parent_set"] = runs[2].BackupSetPath;
            m["parent_checkpoint"] = "orch-" + runs[2].RunKey.Split('/')[^1];
            m["chain_index"] = 3;
        });

        await RefusedAsync(runs[2], "ir-loop-r", "the chain loops", runs[1], disk: null);
    }

    [Fact]
    public async Task Restore_SelfParent_Refused()
    {
        var runs = await ChainAsync("ir-self", 1);
        EditManifest(runs[1], m =>
        {
            m["parent"] = runs[1].RunKey.Split('/')[^1];
            m["parent_run"] = runs[1].RunKey;
            m["parent_set"] = runs[1].BackupSetPath;
        });

        await RefusedAsync(runs[1], "ir-self-r", "already in the chain (a loop)", runs[1], disk: null);
    }

    [Fact]
    public async Task Restore_ParentOfAnotherVm_Refused()
    {
        var runs = await ChainAsync("ir-foreign", 1);
        EditManifest(runs[1], m => m["parent_run"] = $"{Host}/some-other-vm/{runs[0].RunKey.Split('/')[^1]}");

        await RefusedAsync(runs[1], "ir-foreign-r", "is a run of another VM", runs[1], disk: null);
    }

    [Fact]
    public async Task Restore_CheckpointsDoNotLineUp_Refused()
    {
        var runs = await ChainAsync("ir-checkpoint", 1);
        EditManifest(runs[1], m => m["parent_checkpoint"] = "orch-b-somebody-else");

        await RefusedAsync(runs[1], "ir-checkpoint-r", "copied the changes since checkpoint orch-b-somebody-else", runs[1], disk: null);
    }

    [Fact]
    public async Task Restore_ChainIndexesDoNotFollow_Refused()
    {
        var runs = await ChainAsync("ir-index", 1);
        EditManifest(runs[1], m => m["chain_index"] = 5);

        await RefusedAsync(runs[1], "ir-index-r", "its chain index 5 does not follow its parent's (0)", runs[1], disk: null);
    }

    [Fact]
    public async Task Restore_RawDiskClaimingABacking_Refused()
    {
        var runs = await ChainAsync("ir-raw", 1);
        EditManifest(runs[1], m =>
        {
            DiskOf(m, "vdb")["backing_file"] = $"../{runs[0].RunKey.Split('/')[^1]}/vdb.raw";
            DiskOf(m, "vdb")["backing_format"] = "raw";
        });

        await RefusedAsync(runs[1], "ir-raw-r", "it is a raw image but its manifest claims a backing", runs[1], disk: "vdb");
    }

    [Fact]
    public async Task Restore_ManifestBackingNotTheParentImage_Refused()
    {
        var runs = await ChainAsync("ir-manifest", 1);
        EditManifest(runs[1], m => DiskOf(m, "vda")["backing_file"] = "/etc/passwd");

        await RefusedAsync(runs[1], "ir-manifest-r", "its manifest names backing '/etc/passwd'", runs[1]);
    }

    [Fact]
    public async Task Restore_ParentImageAltered_RefusedAtItsChecksumBeforeAnythingIsWritten()
    {
        var runs = await ChainAsync("ir-altered", 2);
        EditManifest(runs[0], m => DiskOf(m, "vda")["sha256"] = new string('0', 64));

        await RefusedAsync(runs[2], "ir-altered-r", "does not match its manifest checksum", runs[0]);
    }

    [Fact]
    public async Task Verify_WholeChain_EverySetPassedTopFirst()
    {
        var runs = await ChainAsync("ir-verify", 2);

        var result = await Restorer.VerifyAsync(runs[2].RunKey);

        Assert.True(result.Passed, string.Join("; ", result.Sets.Select(s => s.Error)));
        Assert.Equal(runs.Select(r => r.RunKey).Reverse(), result.Sets.Select(s => s.Run));
        Assert.Equal(["incremental", "incremental", "full"], result.Sets.Select(s => s.Level));
        Assert.Equal([2, 1, 0], result.Sets.Select(s => s.ChainIndex ?? -1));
        Assert.Contains(result.Sets[0].Checks, c => c.Contains($"header backing is ../{runs[1].RunKey.Split('/')[^1]}/vda.qcow2", StringComparison.Ordinal));
        Assert.Contains(result.Sets[2].Checks, c => c.Contains("vdb: raw, whole", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Verify_FullOfTheChainAltered_ThatSetFailsNamingTheDiskTheOthersPass()
    {
        var runs = await ChainAsync("ir-verify-bad", 2);
        EditManifest(runs[0], m => DiskOf(m, "vdb")["sha256"] = new string('f', 64));

        var result = await Restorer.VerifyAsync(runs[2].RunKey);

        Assert.False(result.Passed);
        Assert.Equal([true, true, false], result.Sets.Select(s => s.Passed));
        Assert.Contains("disk vdb", result.Sets[2].Error, StringComparison.Ordinal);
        Assert.Contains("does not match its manifest checksum", result.Sets[2].Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Verify_HostileHeaderInTheMiddle_StopsThereNamingTheSetAndDisk()
    {
        var runs = await ChainAsync("ir-verify-hostile", 2);
        await Hypervisor.Images.SetBackingAsync(Image(runs[1], "vda"), "/dev/sda", "raw");

        var result = await Restorer.VerifyAsync(runs[2].RunKey);

        Assert.False(result.Passed);
        Assert.Equal([true, false], result.Sets.Select(s => s.Passed));
        Assert.Contains($"backup set {runs[1].RunKey}", result.Sets[1].Error, StringComparison.Ordinal);
        Assert.Contains("disk vda: its image header names backing '/dev/sda' (raw)", result.Sets[1].Error, StringComparison.Ordinal);
    }
}
