using System.Xml.Linq;
using Orchestrator.Grains.Backups;

namespace Orchestrator.UnitTests.Backups;

public sealed class DomainXmlEditorTests
{
    private const string OnOverlay = """
        <domain type='qemu'>
          <name>web-1</name>
          <devices>
            <disk type='file' device='disk'>
              <driver name='qemu' type='qcow2'/>
              <source file='/img/web-1.qcow2.orch-b-1.qcow2'/>
              <backingStore type='file'>
                <format type='qcow2'/>
                <source file='/img/web-1.qcow2'/>
                <backingStore type='file'>
                  <format type='qcow2'/>
                  <source file='/img/templates/debian.qcow2'/>
                  <backingStore/>
                </backingStore>
              </backingStore>
              <target dev='vda' bus='virtio'/>
            </disk>
          </devices>
        </domain>
        """;

    [Fact]
    public void PointDiskAt_LinkedClone_KeepsTheRecordedChainBelowTheBase()
    {
        var xml = DomainXmlEditor.PointDiskAt(OnOverlay, "vda", "/img/web-1.qcow2", "qcow2", [("/img/templates/debian.qcow2", "qcow2")]);

        var disk = XElement.Parse(xml).Element("devices")!.Element("disk")!;
        Assert.Equal("/img/web-1.qcow2", (string?)disk.Element("source")!.Attribute("file"));
        var store = Assert.Single(disk.Elements("backingStore"));
        Assert.Equal("/img/templates/debian.qcow2", (string?)store.Element("source")!.Attribute("file"));
        Assert.Equal("qcow2", (string?)store.Element("format")!.Attribute("type"));
        var end = Assert.Single(store.Elements("backingStore"));
        Assert.False(end.HasElements || end.HasAttributes); // the chain ends there: nothing below the template
        Assert.DoesNotContain("orch-b-1", xml, StringComparison.Ordinal);
    }

    [Fact]
    public void PointDiskAt_NoChain_SaysSoWithAnEmptyBackingStore()
    {
        var xml = DomainXmlEditor.PointDiskAt(OnOverlay, "vda", "/img/web-1.raw", "raw", []);

        var disk = XElement.Parse(xml).Element("devices")!.Element("disk")!;
        Assert.Equal("raw", (string?)disk.Element("driver")!.Attribute("type"));
        var store = Assert.Single(disk.Elements("backingStore"));
        Assert.False(store.HasElements || store.HasAttributes);
    }
}
