using System.Globalization;
using System.Xml.Linq;

namespace Orchestrator.Hypervisor.Libvirt;

/// <summary>
/// Reads libvirt domain and snapshot XML and writes the snapshot requests. Pure functions, no libvirt calls.
/// </summary>
/// <remarks>
/// Labels live in the domain's <c>&lt;metadata&gt;</c> under the namespace <see cref="LabelsNamespace"/>:
/// <code>
/// &lt;metadata&gt;
///   &lt;orch:labels xmlns:orch="https://orchestrator.dev/xmlns/labels/1"&gt;
///     &lt;orch:label key="tier"&gt;web&lt;/orch:label&gt;
///   &lt;/orch:labels&gt;
/// &lt;/metadata&gt;
/// </code>
/// The prefix is free; the namespace URI and the element names are what count. A key given twice keeps the last value.
/// </remarks>
public static class DomainXml
{
    /// <summary>The namespace of the orchestrator's labels inside a domain's &lt;metadata&gt;.</summary>
    public const string LabelsNamespace = "https://orchestrator.dev/xmlns/labels/1";

    private static readonly XNamespace Orch = LabelsNamespace;

    /// <summary>Domain facts from its XML (name, uuid, disks, labels, memory, vcpus); the power state comes from elsewhere.</summary>
    public static DomainInfo Parse(string xml, DomainPowerState state)
    {
        var root = XDocument.Parse(xml).Root ?? throw new FormatException("empty domain XML");
        var name = (string?)root.Element("name") ?? throw new FormatException("domain XML has no <name>");
        var uuid = Guid.TryParse((string?)root.Element("uuid"), out var g) ? g : Guid.Empty;
        return new DomainInfo(name, uuid, state, ParseDisks(root), ParseLabels(root), ParseMemoryKiB(root), ParseVcpus(root));
    }

    /// <summary>File-backed disks (device='disk'), each with its backing chain from top to bottom.</summary>
    public static IReadOnlyList<DomainDisk> ParseDisks(string xml) =>
        ParseDisks(XDocument.Parse(xml).Root ?? throw new FormatException("empty domain XML"));

    /// <summary>Target names of every &lt;disk&gt; of the domain, whatever its device or source type.</summary>
    public static IReadOnlyList<string> AllDiskTargets(string xml)
    {
        var root = XDocument.Parse(xml).Root ?? throw new FormatException("empty domain XML");
        return root.Element("devices")?.Elements("disk")
            .Select(d => (string?)d.Element("target")?.Attribute("dev"))
            .OfType<string>()
            .ToList() ?? [];
    }

    /// <summary>The formats of the domain's disks (device='disk'), by target, for every disk that has a source.</summary>
    public static IReadOnlyDictionary<string, string> DiskFormats(string xml)
    {
        var root = XDocument.Parse(xml).Root ?? throw new FormatException("empty domain XML");
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var disk in root.Element("devices")?.Elements("disk") ?? [])
        {
            if ((string?)disk.Attribute("device") is not (null or "disk"))
            {
                continue;
            }

            var target = (string?)disk.Element("target")?.Attribute("dev");
            if (target is null || disk.Element("source") is null)
            {
                continue;
            }

            result[target] = (string?)disk.Element("driver")?.Attribute("type") ?? "raw";
        }

        return result;
    }

    public static IReadOnlyDictionary<string, string> ParseLabels(string xml) =>
        ParseLabels(XDocument.Parse(xml).Root ?? throw new FormatException("empty domain XML"));

    /// <summary>The &lt;metadata&gt; child that carries the labels, to put into a domain definition.</summary>
    public static XElement FormatLabels(IReadOnlyDictionary<string, string> labels) =>
        new(
            Orch + "labels",
            new XAttribute(XNamespace.Xmlns + "orch", LabelsNamespace),
            labels.OrderBy(l => l.Key, StringComparer.Ordinal).Select(l => new XElement(Orch + "label", new XAttribute("key", l.Key), l.Value)));

    /// <summary>A disk-only external snapshot: the listed disks get qcow2 overlays, every other disk snapshot='no'.</summary>
    public static string ExternalSnapshotRequest(IReadOnlyList<OverlaySpec> overlays, IReadOnlyList<string> allTargets)
    {
        var byTarget = overlays.ToDictionary(o => o.Target, StringComparer.Ordinal);
        var disks = new XElement("disks");
        foreach (var target in allTargets)
        {
            disks.Add(byTarget.TryGetValue(target, out var overlay)
                ? new XElement(
                    "disk",
                    new XAttribute("name", target),
                    new XAttribute("snapshot", "external"),
                    new XElement("driver", new XAttribute("type", "qcow2")),
                    new XElement("source", new XAttribute("file", overlay.OverlayPath)))
                : new XElement("disk", new XAttribute("name", target), new XAttribute("snapshot", "no")));
        }

        return new XElement("domainsnapshot", new XElement("description", "orchestrator backup overlay"), disks).ToString(SaveOptions.DisableFormatting);
    }

    /// <summary>An internal snapshot request: only a name and an optional description; libvirt picks disk+memory or disk only.</summary>
    public static string InternalSnapshotRequest(string name, string? description)
    {
        var root = new XElement("domainsnapshot", new XElement("name", name));
        if (description is not null)
        {
            root.Add(new XElement("description", description));
        }

        return root.ToString(SaveOptions.DisableFormatting);
    }

    /// <summary>A snapshot's XML (virDomainSnapshotGetXMLDesc) as an <see cref="InternalSnapshotInfo"/>.</summary>
    public static InternalSnapshotInfo ParseSnapshot(string xml)
    {
        var root = XDocument.Parse(xml).Root ?? throw new FormatException("empty snapshot XML");
        var name = (string?)root.Element("name") ?? throw new FormatException("snapshot XML has no <name>");
        var created = long.TryParse((string?)root.Element("creationTime"), NumberStyles.Integer, CultureInfo.InvariantCulture, out var secs)
            ? DateTimeOffset.FromUnixTimeSeconds(secs)
            : DateTimeOffset.MinValue;
        var memory = (string?)root.Element("memory")?.Attribute("snapshot");
        var state = (string?)root.Element("state") switch
        {
            "running" => DomainPowerState.Running,
            "blocked" => DomainPowerState.Blocked,
            "paused" => DomainPowerState.Paused,
            "shutdown" => DomainPowerState.ShuttingDown,
            "shutoff" => DomainPowerState.ShutOff,
            "crashed" => DomainPowerState.Crashed,
            "pmsuspended" => DomainPowerState.PmSuspended,
            _ => DomainPowerState.NoState,
        };
        return new InternalSnapshotInfo(name, created, memory is "internal" or "external", state, (string?)root.Element("description"));
    }

    private static List<DomainDisk> ParseDisks(XElement root)
    {
        var disks = new List<DomainDisk>();
        foreach (var disk in root.Element("devices")?.Elements("disk") ?? [])
        {
            if ((string?)disk.Attribute("device") is not (null or "disk"))
            {
                continue;
            }

            var target = (string?)disk.Element("target")?.Attribute("dev");
            var file = (string?)disk.Element("source")?.Attribute("file");
            if (target is null || file is null)
            {
                continue;
            }

            var format = (string?)disk.Element("driver")?.Attribute("type") ?? "raw";
            var (chain, described) = ParseChain(disk);
            disks.Add(new DomainDisk(target, file, format, chain) { ChainDescribed = described });
        }

        return disks;
    }

    private static (List<DiskLayer> Chain, bool Described) ParseChain(XElement disk)
    {
        var chain = new List<DiskLayer>();
        var store = disk.Element("backingStore");
        while (store is not null)
        {
            if (!store.HasElements && !store.HasAttributes)
            {
                break; // <backingStore/> ends the chain
            }

            var file = (string?)store.Element("source")?.Attribute("file");
            var format = (string?)store.Element("format")?.Attribute("type");
            if (file is null || format is null)
            {
                // A non-file layer (network, block) or one without a format: the chain goes on below what we can
                // name, so nothing may copy, flatten or commit it by guesswork.
                return (chain, false);
            }

            chain.Add(new DiskLayer(file, format));
            store = store.Element("backingStore");
        }

        return (chain, true);
    }

    private static Dictionary<string, string> ParseLabels(XElement root)
    {
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        var container = root.Element("metadata")?.Element(Orch + "labels");
        foreach (var label in container?.Elements(Orch + "label") ?? [])
        {
            var key = (string?)label.Attribute("key");
            if (!string.IsNullOrEmpty(key))
            {
                labels[key] = label.Value;
            }
        }

        return labels;
    }

    private static long ParseMemoryKiB(XElement root)
    {
        var memory = root.Element("currentMemory") ?? root.Element("memory");
        if (memory is null || !decimal.TryParse(memory.Value, NumberStyles.Number, CultureInfo.InvariantCulture, out var value))
        {
            return 0;
        }

        var bytes = ((string?)memory.Attribute("unit") ?? "KiB") switch
        {
            "b" or "bytes" => value,
            "KB" => value * 1000,
            "k" or "KiB" => value * 1024,
            "MB" => value * 1000 * 1000,
            "M" or "MiB" => value * 1024 * 1024,
            "GB" => value * 1000 * 1000 * 1000,
            "G" or "GiB" => value * 1024 * 1024 * 1024,
            "TB" => value * 1000 * 1000 * 1000 * 1000,
            "T" or "TiB" => value * 1024m * 1024 * 1024 * 1024,
            _ => value * 1024,
        };
        return (long)(bytes / 1024);
    }

    private static int ParseVcpus(XElement root)
    {
        var vcpu = root.Element("vcpu");
        if (vcpu is null)
        {
            return 0;
        }

        var current = (string?)vcpu.Attribute("current");
        return int.TryParse(current ?? vcpu.Value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n : 0;
    }
}
