using Orchestrator.Hypervisor.Contract;
using Orchestrator.Hypervisor.Tests.Lab;

namespace Orchestrator.Hypervisor.Tests;

/// <summary>
/// The hypervisor contract (tests/Shared/HypervisorContract) on real libvirtd + QEMU: the lab host and guests of
/// <see cref="LabFixture"/>, shared with the other driver tests of the collection (which run one at a time). The
/// running domain is <see cref="LabFixture.BackupVm"/> (vda raw, vdb qcow2, writing its counter), the shut-off one
/// <see cref="LabFixture.OfflineVm"/>; every contract test leaves them as it found them.
/// </summary>
[Collection(LabCollection.Name)]
public sealed class LibvirtHypervisorContractTests(LabFixture lab) : HypervisorContract
{
    protected override IHypervisor Hypervisor => lab.Hypervisor;

    protected override string RunningVm => LabFixture.BackupVm;

    protected override string ShutOffVm => LabFixture.OfflineVm;

    protected override string NewScratchDir() => lab.NewWorkDir("contract");

    /// <summary>Only a real file system has symbolic links: the guard compares real paths, so a link to a domain's image is refused too.</summary>
    [Fact]
    public async Task DeleteAsync_SymlinkToImagesADomainUses_RefusedAndBothStay()
    {
        var running = await Hypervisor.GetDomainAsync(RunningVm);
        var off = await Hypervisor.GetDomainAsync(ShutOffVm);
        var dir = NewScratchDir();
        foreach (var (domain, disk) in new[] { (RunningVm, running.Disks[0]), (ShutOffVm, off.Disks[0]) })
        {
            var link = Path.Combine(dir, $"{domain}-{disk.Target}.link");
            File.CreateSymbolicLink(link, disk.SourcePath);
            var error = await Assert.ThrowsAsync<HypervisorException>(() => Hypervisor.Images.DeleteAsync(link));
            Assert.Equal(HypervisorErrorKind.ImageInUse, error.Kind);
            Assert.Contains(link, error.Message, StringComparison.Ordinal);
            Assert.Contains($"'{domain}'", error.Message, StringComparison.Ordinal);
            Assert.True(File.Exists(disk.SourcePath));
            Assert.NotNull(new FileInfo(link).LinkTarget);

            // Another spelling of the same path (a "." and a ".." in it) is the same image.
            var spelled = Path.Combine(Path.GetDirectoryName(disk.SourcePath)!, ".", "..", Path.GetFileName(Path.GetDirectoryName(disk.SourcePath)!), Path.GetFileName(disk.SourcePath));
            await AssertKindAsync(HypervisorErrorKind.ImageInUse, () => Hypervisor.Images.DeleteAsync(spelled));
        }
    }
}
