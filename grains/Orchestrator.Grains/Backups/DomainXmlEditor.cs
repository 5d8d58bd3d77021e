using System.Xml.Linq;

namespace Orchestrator.Grains.Backups;

/// <summary>Edits libvirt domain XML for recovery (point a disk back at its base) and restore (a new VM).</summary>
public static class DomainXmlEditor
{
    /// <summary>
    /// The disk <paramref name="target"/> reads <paramref name="path"/> (of <paramref name="format"/>) over exactly
    /// <paramref name="backingChain"/> (top to bottom, each with its format), written out as nested
    /// <c>&lt;backingStore&gt;</c> elements ending in an empty one: libvirt then opens the chain as named, probing
    /// nothing, and a linked clone keeps its template.
    /// </summary>
    public static string PointDiskAt(string xml, string target, string path, string format, IReadOnlyList<(string Path, string Format)> backingChain)
    {
        var root = XElement.Parse(xml);
        var disk = FindDisk(root, target);
        SetSource(disk, path, format);
        var parent = new XElement("backingStore");
        var top = parent;
        foreach (var (layerPath, layerFormat) in backingChain)
        {
            parent.Add(new XAttribute("type", "file"), new XElement("format", new XAttribute("type", layerFormat)), new XElement("source", new XAttribute("file", layerPath)));
            var next = new XElement("backingStore");
            parent.Add(next);
            parent = next;
        }

        // After <source>, where libvirt writes it.
        disk.Element("source")!.AddAfterSelf(top);
        return root.ToString();
    }

    /// <summary>A new VM from a backed-up definition: new name, no uuid (libvirt makes one), no MACs, new disk paths.</summary>
    public static string ForRestore(string xml, string newName, IReadOnlyDictionary<string, (string Path, string Format)> disks)
    {
        var root = XElement.Parse(xml);
        root.Element("name")!.Value = newName;
        root.Element("uuid")?.Remove();
        root.Attribute("id")?.Remove();
        foreach (var mac in root.Descendants("mac").ToList())
        {
            mac.Remove();
        }

        foreach (var (target, (path, format)) in disks)
        {
            SetSource(FindDisk(root, target), path, format);
        }

        return root.ToString();
    }

    private static XElement FindDisk(XElement root, string target) =>
        root.Element("devices")?.Elements("disk").FirstOrDefault(d => (string?)d.Element("target")?.Attribute("dev") == target)
            ?? throw new OrchestratorException(ErrorCode.Internal, $"domain XML has no disk '{target}'");

    private static void SetSource(XElement disk, string path, string format)
    {
        disk.Elements("backingStore").Remove();
        var source = disk.Element("source");
        if (source is null)
        {
            disk.Add(source = new XElement("source"));
        }

        source.RemoveAttributes();
        source.SetAttributeValue("file", path);
        var driver = disk.Element("driver");
        if (driver is null)
        {
            disk.AddFirst(driver = new XElement("driver", new XAttribute("name", "qemu")));
        }

        driver.SetAttributeValue("type", format);
    }
}
