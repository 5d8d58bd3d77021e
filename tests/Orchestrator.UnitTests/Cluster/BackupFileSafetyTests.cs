using Orchestrator.Hypervisor;

namespace Orchestrator.UnitTests.Cluster;

/// <summary>
/// The backup set on the real file system (the disks are simulated, the directories and the manifest are real):
/// private modes, no write or delete through a planted symbolic link, restore directories confined.
/// </summary>
[Collection(ThreeHostClusterCollection.Name)]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class BackupFileSafetyTests(ThreeHostClusterFixture fixture) : IDisposable
{
    private readonly string _outside = Directory.CreateTempSubdirectory("orch-outside-").FullName;

    public void Dispose() => Directory.Delete(_outside, recursive: true);

    private async Task<IVirtualMachineGrain> NewVmAsync(string host, string name)
    {
        fixture.Hypervisors[host].AddDomain(name, DomainPowerState.Running, [("vda", "qcow2", 1L << 30)]);
        await fixture.Grains.GetGrain<IHostGrain>(host).SyncInventoryAsync();
        return fixture.Grains.GetGrain<IVirtualMachineGrain>($"{host}/{name}");
    }

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

    [Fact]
    public async Task StartBackup_CompletedSet_Directories0700Manifest0600()
    {
        var vm = await NewVmAsync("kvm-01", "fs-modes");

        var run = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest()));

        Assert.Equal(BackupStep.Completed, run.Step);
        const UnixFileMode Owner = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        Assert.Equal(Owner | UnixFileMode.UserExecute, File.GetUnixFileMode(run.BackupSetPath));
        Assert.Equal(Owner | UnixFileMode.UserExecute, File.GetUnixFileMode(Path.GetDirectoryName(run.BackupSetPath)!));
        Assert.Equal(Owner, File.GetUnixFileMode(Path.Combine(run.BackupSetPath, "manifest.json")));
    }

    [Fact]
    public async Task StartBackup_TargetIsASymlinkOutOfTheRoot_InvalidArgumentNamingTarget()
    {
        var vm = await NewVmAsync("kvm-02", "fs-target-link");
        Directory.CreateDirectory(fixture.BackupRoot);
        var link = Path.Combine(fixture.BackupRoot, $"escape-{Guid.NewGuid():N}");
        Directory.CreateSymbolicLink(link, _outside);

        var e = await Assert.ThrowsAsync<OrchestratorException>(() => vm.StartBackupAsync(new BackupRequest { Target = link }));

        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
        Assert.Equal("target", e.Field);
        Assert.Contains("symbolic link", e.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFileSystemEntries(_outside));
    }

    [Fact]
    public async Task StartBackup_VmDirectoryIsASymlinkOutOfTheRoot_RefusedInPreflightAndWritesNothingOutside()
    {
        var vm = await NewVmAsync("kvm-03", "fs-vm-link");
        var target = Path.Combine(fixture.BackupRoot, "kvm-03");
        Directory.CreateDirectory(target);
        Directory.CreateSymbolicLink(Path.Combine(target, "fs-vm-link"), _outside);

        // Preflight runs before the call returns: refused before any overlay, naming the target.
        var e = await Assert.ThrowsAsync<OrchestratorException>(() => vm.StartBackupAsync(new BackupRequest()));

        Assert.Equal(ErrorCode.FailedPrecondition, e.Code);
        Assert.Equal("target", e.Field);
        Assert.Contains("symbolic link", e.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFileSystemEntries(_outside));
        Assert.Empty((await fixture.Hypervisors["kvm-03"].GetDomainAsync("fs-vm-link")).Disks[0].BackingChain);
    }

    [Fact]
    public async Task Retention_OldSetReplacedByASymlink_NothingOutsideDeleted()
    {
        var vm = await NewVmAsync("kvm-01", "fs-prune-link");
        var first = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest { Retention = new BackupRetention(KeepLast: 1) }));
        Assert.Equal(BackupStep.Completed, first.Step);

        // The first set's directory swapped for a link to a directory holding someone else's file of the backup
        // image's name (deleting the set's files by path would delete it).
        Directory.Delete(first.BackupSetPath, recursive: true);
        Directory.CreateSymbolicLink(first.BackupSetPath, _outside);
        var precious = Path.Combine(_outside, Path.GetFileName(first.Disks[0].BackupPath));
        await File.WriteAllTextAsync(precious, "keep");
        await Task.Delay(1100); // run ids are per second

        var second = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest { Retention = new BackupRetention(KeepLast: 1) }));

        Assert.Equal(BackupStep.Completed, second.Step);
        Assert.Equal("keep", await File.ReadAllTextAsync(precious));
    }

    [Fact]
    public async Task Restore_ImageDirectoryOutsideTheAllowedRoots_InvalidArgumentNamingImageDirectory()
    {
        var vm = await NewVmAsync("kvm-02", "fs-restore-dir");
        var run = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest()));
        Assert.Equal(BackupStep.Completed, run.Step);

        var e = await Assert.ThrowsAsync<OrchestratorException>(() => vm.RestoreAsync(new RestoreRequest(run.RunKey, "fs-restored", Define: false, ImageDirectory: _outside)));

        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
        Assert.Equal("image_directory", e.Field);
        Assert.Empty(Directory.GetFileSystemEntries(_outside));
    }

    [Fact]
    public async Task Restore_ImageDirectoryIsTheOriginalDisksDirectory_Allowed()
    {
        var vm = await NewVmAsync("kvm-02", "fs-restore-same");
        var run = await WaitDoneAsync(vm, await vm.StartBackupAsync(new BackupRequest()));

        var restored = await vm.RestoreAsync(new RestoreRequest(run.RunKey, "fs-restored-same", Define: false, ImageDirectory: "/var/lib/libvirt/images"));

        Assert.Equal(["/var/lib/libvirt/images/fs-restored-same-vda.qcow2"], restored.Images);
    }
}
