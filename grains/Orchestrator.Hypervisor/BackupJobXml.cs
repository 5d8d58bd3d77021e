using System.Globalization;
using System.Text.RegularExpressions;
using System.Xml.Linq;

namespace Orchestrator.Hypervisor;

/// <summary>
/// What both drivers agree on for backup jobs and checkpoints: the checks a request passes before anything starts (so
/// the simulated and the libvirt driver refuse the same requests with the same kinds) and libvirt's XML for them.
/// </summary>
internal static partial class BackupJobXml
{
    /// <summary>
    /// Refuses a request that cannot start on this domain, before anything is created: the kinds are those of
    /// <see cref="IHypervisor.StartBackupJobAsync"/>.
    /// </summary>
    public static void Validate(DomainInfo domain, BackupJobSpec spec, IReadOnlyCollection<string> checkpoints, Func<string, bool> fileExists)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (!domain.IsActive)
        {
            throw new HypervisorException(HypervisorErrorKind.InvalidDomainState, $"domain {domain.Name} is {domain.State}: a backup job needs a running domain");
        }

        if (spec.Disks.Count == 0)
        {
            throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"backup job of {domain.Name}: no disk to copy");
        }

        var disks = domain.Disks.ToDictionary(d => d.Target, StringComparer.Ordinal);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var disk in spec.Disks)
        {
            if (!disks.ContainsKey(disk.Target))
            {
                throw new HypervisorException(HypervisorErrorKind.DiskNotFound, $"domain {domain.Name} has no disk {disk.Target}");
            }

            if (!seen.Add(disk.Target))
            {
                throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"backup job of {domain.Name}: disk {disk.Target} named twice");
            }

            if (!Path.IsPathFullyQualified(disk.TargetPath))
            {
                throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"backup target of {disk.Target} must be an absolute path: '{disk.TargetPath}'");
            }

            if (disk.TargetFormat is not ("raw" or "qcow2"))
            {
                throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"backup target of {disk.Target}: format '{disk.TargetFormat}' (raw or qcow2)");
            }

            if (spec.Incremental is not null && !disk.Full && disk.TargetFormat != "qcow2")
            {
                throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"backup target of {disk.Target}: an incremental copy goes into a qcow2 file (only the changed clusters are allocated)");
            }

            if (fileExists(disk.TargetPath))
            {
                throw new HypervisorException(HypervisorErrorKind.FileExists, $"backup target '{disk.TargetPath}' already exists");
            }
        }

        if (spec.Incremental is not null)
        {
            RequireName(spec.Incremental, "incremental checkpoint");
            if (!checkpoints.Contains(spec.Incremental))
            {
                throw new HypervisorException(HypervisorErrorKind.CheckpointNotFound, $"domain {domain.Name} has no checkpoint {spec.Incremental} to copy the changes since");
            }
        }

        if (spec.NewCheckpoint is null)
        {
            if (spec.CheckpointDisks is { Count: > 0 })
            {
                throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"backup job of {domain.Name}: checkpoint disks named without a checkpoint");
            }

            return;
        }

        RequireName(spec.NewCheckpoint, "checkpoint");
        if (checkpoints.Contains(spec.NewCheckpoint))
        {
            throw new HypervisorException(HypervisorErrorKind.CheckpointExists, $"domain {domain.Name} already has a checkpoint {spec.NewCheckpoint}");
        }

        foreach (var target in spec.CheckpointDisks ?? [])
        {
            if (!disks.TryGetValue(target, out var disk))
            {
                throw new HypervisorException(HypervisorErrorKind.DiskNotFound, $"domain {domain.Name} has no disk {target}");
            }

            if (disk.Format != "qcow2")
            {
                throw new HypervisorException(HypervisorErrorKind.UnsupportedDiskFormat, $"disk {target} of {domain.Name} is {disk.Format}: only a qcow2 image holds a dirty bitmap");
            }
        }
    }

    /// <summary>Checkpoint names are ours: letters, digits, '.', '_', '-', at most 64, not starting with a dot or dash.</summary>
    public static void RequireName(string name, string what)
    {
        if (name is null || !NamePattern().IsMatch(name))
        {
            throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"{what} name '{Short(name)}': letters, digits, '.', '_', '-' (at most 64, starting with a letter or digit)");
        }
    }

    /// <summary>&lt;domainbackup mode='push'&gt; naming every disk of the domain: the listed ones copied, the others not.</summary>
    public static string BackupRequest(BackupJobSpec spec, IEnumerable<string> allTargets)
    {
        var listed = spec.Disks.ToDictionary(d => d.Target, StringComparer.Ordinal);
        var disks = new XElement("disks");
        foreach (var target in allTargets)
        {
            disks.Add(listed.TryGetValue(target, out var disk)
                ? new XElement(
                    "disk",
                    new XAttribute("name", target),
                    new XAttribute("backup", "yes"),
                    new XAttribute("type", "file"),
                    spec.Incremental is not null && disk.Full ? new XAttribute("backupmode", "full") : null,
                    new XElement("target", new XAttribute("file", disk.TargetPath)),
                    new XElement("driver", new XAttribute("type", disk.TargetFormat)))
                : new XElement("disk", new XAttribute("name", target), new XAttribute("backup", "no")));
        }

        var root = new XElement("domainbackup", new XAttribute("mode", "push"));
        if (spec.Incremental is not null)
        {
            root.Add(new XElement("incremental", spec.Incremental));
        }

        root.Add(disks);
        return root.ToString(SaveOptions.DisableFormatting);
    }

    /// <summary>&lt;domaincheckpoint&gt; with a bitmap on the named disks and checkpoint='no' on every other disk.</summary>
    public static string CheckpointRequest(string name, IReadOnlyCollection<string> bitmapDisks, IEnumerable<string> allTargets) =>
        new XElement(
            "domaincheckpoint",
            new XElement("name", name),
            new XElement(
                "disks",
                allTargets.Select(t => bitmapDisks.Contains(t)
                    ? new XElement("disk", new XAttribute("name", t), new XAttribute("checkpoint", "bitmap"))
                    : new XElement("disk", new XAttribute("name", t), new XAttribute("checkpoint", "no")))))
            .ToString(SaveOptions.DisableFormatting);

    /// <summary>A checkpoint's XML (as libvirt gives it, or as a redefinition names it).</summary>
    public static CheckpointInfo ParseCheckpoint(string xml)
    {
        var root = XDocument.Parse(xml).Root;
        if (root is null || root.Name.LocalName != "domaincheckpoint")
        {
            throw new HypervisorException(HypervisorErrorKind.InvalidArgument, "checkpoint XML: the root element must be <domaincheckpoint>");
        }

        var name = (string?)root.Element("name") ?? throw new HypervisorException(HypervisorErrorKind.InvalidArgument, "checkpoint XML: no <name>");
        var parent = (string?)root.Element("parent")?.Element("name");
        var created = long.TryParse((string?)root.Element("creationTime"), NumberStyles.Integer, CultureInfo.InvariantCulture, out var seconds)
            ? DateTimeOffset.FromUnixTimeSeconds(seconds)
            : DateTimeOffset.UnixEpoch;
        var disks = root.Element("disks")?.Elements("disk")
            .Select(d => new CheckpointDisk(
                (string?)d.Attribute("name") ?? string.Empty,
                (string?)d.Attribute("checkpoint") == "bitmap" ? (string?)d.Attribute("bitmap") ?? name : null))
            .ToList() ?? [];
        return new CheckpointInfo(name, parent, created, disks) { Xml = xml };
    }

    private static string Short(string? value) => value is null ? "(none)" : value.Length <= 40 ? value : value[..40] + "...";

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    private static partial Regex NamePattern();
}
