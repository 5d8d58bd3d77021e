using System.Globalization;
using System.Xml.Linq;

namespace Orchestrator.Hypervisor.Simulated;

/// <summary>Libvirt-shaped domain XML for the simulated host (enough for define/redefine round trips).</summary>
internal static class SimulatedDomainXml
{
    public static readonly XNamespace LabelsNamespace = "https://orchestrator.dev/xmlns/labels/1";

    /// <summary>The XML of <paramref name="domain"/>; with <paramref name="nvram"/>, an <c>&lt;os&gt;&lt;nvram&gt;</c> file.</summary>
    public static string Write(DomainInfo domain, string? nvram = null)
    {
        var devices = new XElement("devices");
        foreach (var disk in domain.Disks)
        {
            var element = new XElement(
                "disk",
                new XAttribute("type", "file"),
                new XAttribute("device", "disk"),
                new XElement("driver", new XAttribute("name", "qemu"), new XAttribute("type", disk.Format)),
                new XElement("source", new XAttribute("file", disk.SourcePath)));
            var parent = element;
            foreach (var layer in disk.BackingChain)
            {
                var store = new XElement(
                    "backingStore",
                    new XAttribute("type", "file"),
                    new XElement("format", new XAttribute("type", layer.Format)),
                    new XElement("source", new XAttribute("file", layer.Path)));
                parent.Add(store);
                parent = store;
            }

            element.Add(new XElement("target", new XAttribute("dev", disk.Target), new XAttribute("bus", "virtio")));
            devices.Add(element);
        }

        var labels = new XElement(
            LabelsNamespace + "labels",
            domain.Labels.Select(kv => new XElement(LabelsNamespace + "label", new XAttribute("key", kv.Key), kv.Value)));
        var root = new XElement(
            "domain",
            new XAttribute("type", "qemu"),
            new XElement("name", domain.Name),
            new XElement("uuid", domain.Uuid.ToString()),
            new XElement("metadata", labels),
            new XElement("memory", new XAttribute("unit", "KiB"), domain.MemoryKiB.ToString(CultureInfo.InvariantCulture)),
            new XElement("vcpu", domain.VirtualCpus.ToString(CultureInfo.InvariantCulture)),
            nvram is null ? null : new XElement("os", new XElement("type", "hvm"), new XElement("nvram", nvram)),
            devices);
        return root.ToString();
    }

    /// <summary>The NVRAM file named in the XML's <c>&lt;os&gt;&lt;nvram&gt;</c>, if any.</summary>
    public static string? NvramOf(string xml) =>
        XElement.Parse(xml).Element("os")?.Element("nvram") is { } nvram && nvram.Value.Trim() is { Length: > 0 } path ? path : null;

    public static DomainInfo Read(string xml)
    {
        XElement root;
        try
        {
            root = XElement.Parse(xml);
        }
        catch (System.Xml.XmlException e)
        {
            throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"domain XML is malformed: {e.Message}");
        }

        var name = root.Element("name")?.Value ?? throw new HypervisorException(HypervisorErrorKind.InvalidArgument, "domain XML has no <name>");
        var uuid = Guid.TryParse(root.Element("uuid")?.Value, out var u) ? u : Guid.NewGuid();
        var disks = root.Element("devices")?.Elements("disk")
            .Where(d => (string?)d.Attribute("device") is null or "disk")
            .Select(d =>
            {
                var chain = new List<DiskLayer>();
                for (var store = d.Element("backingStore"); store?.Element("source") is { } source; store = store.Element("backingStore"))
                {
                    chain.Add(new DiskLayer((string?)source.Attribute("file") ?? "", (string?)store.Element("format")?.Attribute("type") ?? "raw"));
                }

                return new DomainDisk(
                    (string?)d.Element("target")?.Attribute("dev") ?? "",
                    (string?)d.Element("source")?.Attribute("file") ?? "",
                    (string?)d.Element("driver")?.Attribute("type") ?? "raw",
                    chain);
            })
            .ToList() ?? [];
        var labels = root.Element("metadata")?.Element(LabelsNamespace + "labels")?.Elements(LabelsNamespace + "label")
            .ToDictionary(l => (string?)l.Attribute("key") ?? "", l => l.Value) ?? [];
        var memory = long.TryParse(root.Element("memory")?.Value, CultureInfo.InvariantCulture, out var m) ? m : 131072;
        var vcpus = int.TryParse(root.Element("vcpu")?.Value, CultureInfo.InvariantCulture, out var c) ? c : 1;
        return new DomainInfo(name, uuid, DomainPowerState.ShutOff, disks, labels, memory, vcpus);
    }
}
