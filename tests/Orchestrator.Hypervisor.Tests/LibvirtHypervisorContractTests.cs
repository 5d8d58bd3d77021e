using System.Xml.Linq;
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

    /// <summary>
    /// A shut-off domain over a raw base whose bytes a guest made into a qcow2 header naming a backing file: the chain
    /// read from the headers ends at the raw layer, which is never opened (probing it would add the named file).
    /// </summary>
    [Fact]
    public async Task OfflineChain_OverlayOnRawBaseThatLooksLikeQcow2_EndsAtTheRawLayerUnprobed()
    {
        var dir = NewScratchDir();
        var bait = Path.Combine(dir, "bait.raw");
        var rawBase = Path.Combine(dir, "base.raw");
        var overlay = Path.Combine(dir, "top.qcow2");
        await Hypervisor.Images.CreateAsync(bait, "raw", MiB);
        await Hypervisor.Images.CreateAsync(rawBase, "qcow2", MiB, bait, "raw"); // "guest-written" bytes: a qcow2 header
        await Hypervisor.Images.CreateAsync(overlay, "qcow2", 0, rawBase, "raw");
        var name = $"{ShutOffVm}-rawbase";
        var xml = XElement.Parse(await Hypervisor.GetDomainXmlAsync(ShutOffVm, inactive: true));
        xml.Element("name")!.Value = name;
        xml.Element("uuid")?.Remove();
        var disk = xml.Descendants("disk").Single(d => d.Element("target")?.Attribute("dev")?.Value == "vda");
        disk.Element("source")!.SetAttributeValue("file", overlay);
        disk.Element("driver")!.SetAttributeValue("type", "qcow2");
        disk.Elements("backingStore").Remove();
        await Hypervisor.DefineDomainAsync(xml.ToString());
        try
        {
            var vda = Assert.Single((await Hypervisor.GetDomainAsync(name)).Disks);
            Assert.Equal(overlay, vda.SourcePath);
            Assert.Equal([new DiskLayer(rawBase, "raw")], vda.BackingChain);
            Assert.True(vda.ChainDescribed);
            await AssertKindAsync(HypervisorErrorKind.ImageInUse, () => Hypervisor.Images.DeleteAsync(rawBase));
            await Hypervisor.Images.DeleteAsync(bait); // no domain uses it: the raw layer was never read as qcow2
        }
        finally
        {
            await Hypervisor.UndefineDomainAsync(name);
        }

        await Hypervisor.Images.DeleteAsync(overlay);
        await Hypervisor.Images.DeleteAsync(rawBase);
    }

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
