using System.Xml.Linq;
using Orchestrator.Hypervisor.Libvirt;

namespace Orchestrator.Hypervisor.Tests;

public sealed class DomainXmlTests
{
    private const string LiveXml = """
        <domain type='qemu' id='3'>
          <name>web-1</name>
          <uuid>0b7f4c8e-9d2a-4e31-8f6b-2a1c3d4e5f60</uuid>
          <metadata>
            <x:labels xmlns:x="https://orchestrator.dev/xmlns/labels/1">
              <x:label key="tier">web</x:label>
              <x:label key="env">prod</x:label>
            </x:labels>
            <other:thing xmlns:other="urn:other"><other:label key="ignored">no</other:label></other:thing>
          </metadata>
          <memory unit='KiB'>262144</memory>
          <currentMemory unit='KiB'>131072</currentMemory>
          <vcpu placement='static' current='2'>4</vcpu>
          <devices>
            <disk type='file' device='disk'>
              <driver name='qemu' type='qcow2'/>
              <source file='/img/web-1-vda.orch-r1.qcow2' index='3'/>
              <backingStore type='file' index='2'>
                <format type='qcow2'/>
                <source file='/img/web-1-vda.qcow2'/>
                <backingStore type='file' index='1'>
                  <format type='raw'/>
                  <source file='/img/golden.raw'/>
                  <backingStore/>
                </backingStore>
              </backingStore>
              <target dev='vda' bus='virtio'/>
            </disk>
            <disk type='file' device='disk'>
              <driver name='qemu' type='raw'/>
              <source file='/img/web-1-vdb.raw' index='4'/>
              <backingStore/>
              <target dev='vdb' bus='virtio'/>
            </disk>
            <disk type='block' device='disk'>
              <driver name='qemu' type='raw'/>
              <source dev='/dev/sdz'/>
              <target dev='vdc' bus='virtio'/>
            </disk>
            <disk type='file' device='cdrom'>
              <driver name='qemu' type='raw'/>
              <target dev='hdc' bus='ide'/>
              <readonly/>
            </disk>
          </devices>
        </domain>
        """;

    [Fact]
    public void Parse_LiveXml_ReadsDisksChainsLabelsMemoryAndVcpus()
    {
        var info = DomainXml.Parse(LiveXml, DomainPowerState.Running);

        Assert.Equal("web-1", info.Name);
        Assert.Equal(Guid.Parse("0b7f4c8e-9d2a-4e31-8f6b-2a1c3d4e5f60"), info.Uuid);
        Assert.Equal(131072, info.MemoryKiB);
        Assert.Equal(2, info.VirtualCpus);
        Assert.Equal(new Dictionary<string, string> { ["tier"] = "web", ["env"] = "prod" }, info.Labels);

        Assert.Equal(["vda", "vdb"], info.Disks.Select(d => d.Target).ToList());
        var vda = info.Disks[0];
        Assert.Equal(("/img/web-1-vda.orch-r1.qcow2", "qcow2", 3), (vda.SourcePath, vda.Format, vda.ChainDepth));
        Assert.Equal([new DiskLayer("/img/web-1-vda.qcow2", "qcow2"), new DiskLayer("/img/golden.raw", "raw")], vda.BackingChain);
        Assert.Empty(info.Disks[1].BackingChain);
    }

    [Fact]
    public void DiskFormatsAndTargets_LiveXml_CoverEveryDiskTheyShould()
    {
        Assert.Equal(["vda", "vdb", "vdc", "hdc"], DomainXml.AllDiskTargets(LiveXml));
        Assert.Equal(new Dictionary<string, string> { ["vda"] = "qcow2", ["vdb"] = "raw", ["vdc"] = "raw" }, DomainXml.DiskFormats(LiveXml));
    }

    [Fact]
    public void Parse_MemoryInMiBWithoutCurrent_ConvertsToKiB()
    {
        var info = DomainXml.Parse("<domain><name>a</name><memory unit='MiB'>128</memory><vcpu>3</vcpu></domain>", DomainPowerState.ShutOff);

        Assert.Equal(128 * 1024, info.MemoryKiB);
        Assert.Equal(3, info.VirtualCpus);
        Assert.Empty(info.Labels);
        Assert.Empty(info.Disks);
    }

    [Fact]
    public void ExternalSnapshotRequest_TwoOfFourDisks_OverlaysThoseAndExcludesTheRest()
    {
        var xml = XElement.Parse(DomainXml.ExternalSnapshotRequest(
            [new OverlaySpec("vdb", "/o/vdb.qcow2"), new OverlaySpec("vda", "/o/vda.qcow2")],
            ["vda", "vdb", "vdc", "hdc"]));

        var disks = xml.Element("disks")!.Elements("disk").ToList();
        Assert.Equal(["vda", "vdb", "vdc", "hdc"], disks.Select(d => (string?)d.Attribute("name")).ToList());
        Assert.Equal(["external", "external", "no", "no"], disks.Select(d => (string?)d.Attribute("snapshot")).ToList());
        Assert.Equal("/o/vda.qcow2", (string?)disks[0].Element("source")!.Attribute("file"));
        Assert.Equal("qcow2", (string?)disks[0].Element("driver")!.Attribute("type"));
        Assert.Null(disks[2].Element("source"));
    }

    [Fact]
    public void InternalSnapshotRequest_EscapesText()
    {
        var xml = XElement.Parse(DomainXml.InternalSnapshotRequest("a<b", "x & y"));

        Assert.Equal("a<b", (string?)xml.Element("name"));
        Assert.Equal("x & y", (string?)xml.Element("description"));
    }

    [Fact]
    public void ParseSnapshot_RunningWithMemory_ReadsAllFields()
    {
        var info = DomainXml.ParseSnapshot("""
            <domainsnapshot>
              <name>nightly</name>
              <description>kept 7 days</description>
              <state>running</state>
              <creationTime>1700000000</creationTime>
              <memory snapshot='internal'/>
              <disks><disk name='vda' snapshot='internal'/></disks>
            </domainsnapshot>
            """);

        Assert.Equal(new InternalSnapshotInfo("nightly", DateTimeOffset.FromUnixTimeSeconds(1700000000), true, DomainPowerState.Running, "kept 7 days"), info);
    }

    [Fact]
    public void FormatLabels_RoundTripsThroughParse()
    {
        var labels = new Dictionary<string, string> { ["b"] = "2", ["a"] = "1 & <x>" };
        var domain = new XElement("domain", new XElement("name", "n"), new XElement("metadata", DomainXml.FormatLabels(labels)));

        Assert.Equal(labels, DomainXml.ParseLabels(domain.ToString()));
    }
}
