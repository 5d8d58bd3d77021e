using System.Text.Json;
using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Simulated;

namespace Orchestrator.UnitTests.Cluster;

/// <summary>
/// Backups of disks with a backing chain (a linked clone over a shared template) on the simulated driver, which
/// commits like libvirt: without a base into the deepest image, with one into exactly that image.
/// </summary>
[Collection(ThreeHostClusterCollection.Name)]
public sealed class BackupChainTests(ThreeHostClusterFixture fixture)
{
    private const string Template = "/var/lib/libvirt/images/templates/unit-template.qcow2";

    private static async Task<BackupRunView> WaitDoneAsync(IVirtualMachineGrain vm, BackupRunView run)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!run.IsTerminal)
        {
            Assert.True(DateTime.UtcNow < deadline, $"run stuck at {run.Step}");
            run = await vm.WaitBackupAsync(run.RunKey.Split('/')[^1], run.Version, TimeSpan.FromSeconds(5));
        }

        return run;
    }

    /// <summary>Starts a backup and returns once it copies (the caller slowed the host's copies down).</summary>
    private static async Task<BackupRunView> StartAndWaitForCopyingAsync(IVirtualMachineGrain vm)
    {
        var run = await vm.StartBackupAsync(new BackupRequest());
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (run.Step != BackupStep.Copying)
        {
            Assert.True(DateTime.UtcNow < deadline && !run.IsTerminal, $"never copied: {run.Step} {run.Error}");
            run = await vm.WaitBackupAsync(run.RunKey.Split('/')[^1], run.Version, TimeSpan.FromSeconds(5));
        }

        return run;
    }

    private async Task<(IVirtualMachineGrain Vm, SimulatedHypervisor Hypervisor, string Clone)> NewLinkedCloneAsync(string host, string name, string template)
    {
        var hypervisor = fixture.Hypervisors[host];
        hypervisor.AddDomain(name, DomainPowerState.Running, [("vda", "qcow2", 64L << 20), ("vdb", "raw", 16L << 20)]);
        hypervisor.LinkToTemplate(name, "vda", template);
        await fixture.Grains.GetGrain<IHostGrain>(host).SyncInventoryAsync();
        var clone = (await hypervisor.GetDomainAsync(name)).Disks.Single(d => d.Target == "vda").SourcePath;
        return (fixture.Grains.GetGrain<IVirtualMachineGrain>($"{host}/{name}"), hypervisor, clone);
    }

    [Fact]
    public async Task StartBackup_LinkedCloneThreeTimes_KeepsCloneOverTemplateAndTheTemplateUnchanged()
    {
        var (vm, hypervisor, clone) = await NewLinkedCloneAsync("kvm-01", "chain-3x", Template);
        var templateBefore = await hypervisor.Images.ComputeSha256Async(Template);

        for (var i = 0; i < 3; i++)
        {
            hypervisor.SimulateGuestWrites("chain-3x");
            var run = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest()));

            Assert.True(run.Step == BackupStep.Completed, $"backup {i + 1}: {run.Step} {run.Error}");
            var disk = (await hypervisor.GetDomainAsync("chain-3x")).Disks.Single(d => d.Target == "vda");
            Assert.Equal(clone, disk.SourcePath);
            Assert.Equal([new DiskLayer(Template, "qcow2")], disk.BackingChain);
            Assert.Equal(templateBefore, await hypervisor.Images.ComputeSha256Async(Template));

            // The copy is one standalone qcow2: no backing file, restorable without the template.
            var copy = run.Disks.Single(d => d.Target == "vda");
            var info = await hypervisor.Images.InfoAsync(copy.BackupPath, "qcow2");
            Assert.Null(info.BackingFile);
            Assert.EndsWith("vda.qcow2", copy.BackupPath, StringComparison.Ordinal);

            // The manifest records the chain the disk ran on.
            using var manifest = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(run.BackupSetPath, "manifest.json")));
            var vda = manifest.RootElement.GetProperty("disks").EnumerateArray().Single(d => d.GetProperty("target").GetString() == "vda");
            Assert.Equal(clone, vda.GetProperty("source").GetString());
            var layer = Assert.Single(vda.GetProperty("source_backing_chain").EnumerateArray());
            Assert.Equal((Template, "qcow2"), (layer.GetProperty("path").GetString(), layer.GetProperty("format").GetString()));
        }
    }

    [Fact]
    public async Task StartActiveCommit_NoBase_MergesIntoTheDeepestImageAsLibvirtDoes()
    {
        // The old workflow's call (base = NULL): the clone and the overlay end up in the shared template.
        var hypervisor = fixture.Hypervisors["kvm-02"];
        const string template = "/var/lib/libvirt/images/templates/deepest.qcow2";
        hypervisor.AddDomain("chain-null", DomainPowerState.Running, [("vda", "qcow2", 64L << 20)]);
        hypervisor.LinkToTemplate("chain-null", "vda", template);
        var before = await hypervisor.Images.ComputeSha256Async(template);
        var overlay = "/var/lib/libvirt/images/chain-null-vda.orch-null.qcow2";
        await hypervisor.CreateExternalSnapshotAsync("chain-null", [new OverlaySpec("vda", overlay)]);

        await hypervisor.StartActiveCommitAsync("chain-null", "vda", basePath: null);
        await hypervisor.WaitForBlockJobReadyAsync("chain-null", "vda");
        await hypervisor.PivotAsync("chain-null", "vda");

        var disk = (await hypervisor.GetDomainAsync("chain-null")).Disks.Single();
        Assert.Equal(template, disk.SourcePath);
        Assert.Empty(disk.BackingChain);
        Assert.NotEqual(before, await hypervisor.Images.ComputeSha256Async(template));
    }

    [Fact]
    public async Task StartActiveCommit_BaseNotRightBelowTheTop_RefusedBeforeAnyJob()
    {
        var hypervisor = fixture.Hypervisors["kvm-02"];
        const string template = "/var/lib/libvirt/images/templates/deeper.qcow2";
        hypervisor.AddDomain("chain-deep", DomainPowerState.Running, [("vda", "qcow2", 64L << 20)]);
        hypervisor.LinkToTemplate("chain-deep", "vda", template);
        await hypervisor.CreateExternalSnapshotAsync("chain-deep", [new OverlaySpec("vda", "/var/lib/libvirt/images/chain-deep-vda.orch-x.qcow2")]);

        var e = await Assert.ThrowsAsync<HypervisorException>(() => hypervisor.StartActiveCommitAsync("chain-deep", "vda", template));

        Assert.Equal(HypervisorErrorKind.InvalidArgument, e.Kind);
        Assert.Null(await hypervisor.GetBlockJobAsync("chain-deep", "vda"));
    }

    [Fact]
    public async Task StartBackup_VmStopsWhileCopying_OfflineCommitIntoTheCloneKeepsItsTemplate()
    {
        var (vm, hypervisor, clone) = await NewLinkedCloneAsync("kvm-03", "chain-off", "/var/lib/libvirt/images/templates/offline.qcow2");
        var template = "/var/lib/libvirt/images/templates/offline.qcow2";
        var templateBefore = await hypervisor.Images.ComputeSha256Async(template);
        var speed = hypervisor.Options.CopyBytesPerSecond;
        BackupRunView run;
        try
        {
            hypervisor.Options.CopyBytesPerSecond = 16L << 20; // about a second per disk
            run = await StartAndWaitForCopyingAsync(vm);

            await hypervisor.DestroyDomainAsync("chain-off"); // the guest powers off with the overlay in its chain
            run = await WaitDoneAsync(vm, run);
        }
        finally
        {
            hypervisor.Options.CopyBytesPerSecond = speed;
        }

        var disk = (await hypervisor.GetDomainAsync("chain-off")).Disks.Single(d => d.Target == "vda");
        Assert.Equal(clone, disk.SourcePath);
        Assert.Equal([new DiskLayer(template, "qcow2")], disk.BackingChain);
        Assert.Equal(templateBefore, await hypervisor.Images.ComputeSha256Async(template));
        Assert.False(await hypervisor.Images.ExistsAsync(run.Disks.Single(d => d.Target == "vda").OverlayPath));
        Assert.Contains(run.Steps, s => s.Step == BackupStep.Committing);
    }

    [Fact]
    public async Task StartBackup_InventorySyncedWhileOnOverlays_NextBackupStillAccepted()
    {
        const string template = "/var/lib/libvirt/images/templates/synced.qcow2";
        var (vm, hypervisor, clone) = await NewLinkedCloneAsync("kvm-02", "chain-sync", template);
        var speed = hypervisor.Options.CopyBytesPerSecond;
        BackupRunView run;
        try
        {
            hypervisor.Options.CopyBytesPerSecond = 16L << 20; // about a second per disk
            run = await StartAndWaitForCopyingAsync(vm);

            // The periodic sync sees the VM on its overlays (one layer more than its own chain).
            var onOverlay = (await hypervisor.GetDomainAsync("chain-sync")).Disks.Single(d => d.Target == "vda");
            Assert.Contains(".orch-", onOverlay.SourcePath, StringComparison.Ordinal);
            await fixture.Grains.GetGrain<IHostGrain>("kvm-02").SyncInventoryAsync();
            run = await WaitDoneAsync(vm, run);
        }
        finally
        {
            hypervisor.Options.CopyBytesPerSecond = speed;
        }

        Assert.True(run.Step == BackupStep.Completed, $"{run.Step} {run.Error}");

        // No sync since: the next backup must not take the overlay seen by that sync for the VM's chain.
        var next = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest()));
        Assert.True(next.Step == BackupStep.Completed, $"second backup: {next.Step} {next.Error}");
        Assert.Equal(clone, (await hypervisor.GetDomainAsync("chain-sync")).Disks.Single(d => d.Target == "vda").SourcePath);
    }

    [Fact]
    public async Task SeedDemo_Web1_IsALinkedCloneOfATemplate()
    {
        await using var demo = new SimulatedHypervisor().SeedDemo();

        var vda = (await demo.GetDomainAsync("web-1")).Disks.Single(d => d.Target == "vda");

        Assert.Equal(2, vda.ChainDepth);
        Assert.Equal("qcow2", vda.BackingChain[0].Format);
    }
}
