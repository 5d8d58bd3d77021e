using System.Xml.Linq;

namespace Orchestrator.Grains.Backups;

/// <summary>
/// A restored VM's definition: the XML, what was rewritten or dropped (one line each, for the caller), the files the
/// restore must copy first (NVRAM: from the original's to the new VM's own) and the new files the VM will create
/// (logs), which must not exist yet.
/// </summary>
public sealed record RestoredDefinition(
    string Xml,
    IReadOnlyList<string> Changes,
    IReadOnlyList<(string From, string To)> FilesToCopy,
    IReadOnlyList<string> NewFiles);

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
    public static string ForRestore(string xml, string newName, IReadOnlyDictionary<string, (string Path, string Format)> disks) =>
        ForRestore(xml, newName, disks, _ => false).Xml;

    /// <summary>
    /// A new VM from a backed-up definition that shares no resource with the original: its own disks (the restored
    /// images), its own log and console files, its own NVRAM, no host device, no fixed port, socket, label or device
    /// name of the original. Everything changed is listed in <see cref="RestoredDefinition.Changes"/>. Refuses (with
    /// the reason) what cannot be made the VM's own: an NVRAM file that is gone with no template to start from.
    /// </summary>
    /// <param name="nvramFromSet">The NVRAM copy the backup set holds (taken from the set, not the original's).</param>
    /// <param name="filesDirectory">
    /// Where the new VM's own files (logs, consoles, sockets, NVRAM) go; null: beside the original's (same host).
    /// </param>
    public static RestoredDefinition ForRestore(
        string xml,
        string newName,
        IReadOnlyDictionary<string, (string Path, string Format)> disks,
        Func<string, bool> fileExists,
        string? nvramFromSet = null,
        string? filesDirectory = null)
    {
        ArgumentNullException.ThrowIfNull(disks);
        ArgumentNullException.ThrowIfNull(fileExists);
        var root = XElement.Parse(xml);
        var oldName = root.Element("name")?.Value ?? string.Empty;
        var edit = new RestoreEdit(oldName, newName, filesDirectory);
        root.Element("name")!.Value = newName;
        if (root.Element("uuid") is { } uuid)
        {
            uuid.Remove();
            edit.Note("uuid: removed (libvirt assigns a new one)");
        }

        if (root.Element("genid") is { } genid && genid.Value.Length > 0)
        {
            genid.Value = string.Empty;
            edit.Note("genid: cleared (libvirt generates a new VM generation id)");
        }

        root.Attribute("id")?.Remove();
        var macs = root.Descendants("mac").ToList();
        foreach (var mac in macs)
        {
            mac.Remove();
        }

        if (macs.Count > 0)
        {
            edit.Note($"MAC addresses: {macs.Count} removed (libvirt assigns new ones)");
        }

        foreach (var (target, (path, format)) in disks)
        {
            SetSource(FindDisk(root, target), path, format);
        }

        RewriteNvram(root, edit, fileExists, nvramFromSet);
        foreach (var seclabel in root.Elements("seclabel").Where(s => (string?)s.Attribute("type") == "static").ToList())
        {
            seclabel.Remove();
            edit.Note($"seclabel: static label '{seclabel.Element("label")?.Value}' removed (libvirt labels the new VM dynamically)");
        }

        if (root.Element("devices") is { } devices)
        {
            foreach (var device in devices.Elements().ToList())
            {
                RewriteDevice(device, disks, edit);
            }
        }

        return new RestoredDefinition(root.ToString(), edit.Changes, edit.Copies, edit.NewFiles);
    }

    /// <summary>The file of the VM's NVRAM (a file-backed one, named in <c>&lt;os&gt;&lt;nvram&gt;</c>), or null.</summary>
    public static string? NvramFile(string xml)
    {
        if (XElement.Parse(xml).Element("os")?.Element("nvram") is not { } nvram || (string?)nvram.Attribute("type") is { } type && type != "file")
        {
            return null;
        }

        return (string?)nvram.Element("source")?.Attribute("file") ?? (nvram.Value.Trim() is { Length: > 0 } text ? text : null);
    }

    /// <summary>
    /// A test restore's throwaway VM from a restored definition: no network (every interface removed), its serial
    /// console written to <paramref name="consoleFile"/> (a new file of its own, for console probes; the restored
    /// definition's serial and console devices are replaced), destroyed rather than rebooted. Everything else, disks
    /// included, stays as ForRestore made it.
    /// </summary>
    public static RestoredDefinition ForTestRestore(RestoredDefinition restored, string consoleFile)
    {
        ArgumentNullException.ThrowIfNull(restored);
        var root = XElement.Parse(restored.Xml);
        var changes = restored.Changes.ToList();
        var devices = root.Element("devices") ?? new XElement("devices");
        if (devices.Parent is null)
        {
            root.Add(devices);
        }

        var interfaces = devices.Elements("interface").ToList();
        interfaces.ForEach(i => i.Remove());
        changes.Add($"test restore: {interfaces.Count} network interface(s) removed (the throwaway VM has no network)");
        var consoles = devices.Elements().Where(e => e.Name.LocalName is "serial" or "console").ToList();
        consoles.ForEach(c => c.Remove());
        devices.Add(
            new XElement("serial", new XAttribute("type", "file"), new XElement("source", new XAttribute("path", consoleFile)), new XElement("target", new XAttribute("port", "0"))),
            new XElement("console", new XAttribute("type", "file"), new XElement("source", new XAttribute("path", consoleFile)), new XElement("target", new XAttribute("type", "serial"), new XAttribute("port", "0"))));
        changes.Add($"test restore: serial console written to '{consoleFile}'");
        foreach (var name in new[] { "on_reboot", "on_poweroff", "on_crash" })
        {
            root.Element(name)?.Remove();
        }

        // Where libvirt expects them: after <clock>/<features>, before <devices>; a guest that reboots or powers off is done.
        devices.AddBeforeSelf(new XElement("on_poweroff", "destroy"), new XElement("on_reboot", "destroy"), new XElement("on_crash", "destroy"));
        return restored with { Xml = root.ToString(), Changes = changes, NewFiles = [.. restored.NewFiles, consoleFile] };
    }

    private static void RewriteNvram(XElement root, RestoreEdit edit, Func<string, bool> fileExists, string? nvramFromSet)
    {
        if (root.Element("os")?.Element("nvram") is not { } nvram)
        {
            return;
        }

        var source = nvram.Element("source");
        if ((string?)nvram.Attribute("type") is { } type && type != "file")
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"the VM's NVRAM is a {type} resource ({Describe(source)}) the restore cannot copy; a restored VM must not share it with the original");
        }

        var path = (string?)source?.Attribute("file") ?? (nvram.Value.Trim() is { Length: > 0 } text ? text : null);
        if (path is null)
        {
            return; // libvirt makes the new VM its own from the template
        }

        if (nvramFromSet is not null)
        {
            var own = edit.OwnPath(path);
            edit.Copy(nvramFromSet, own);
            SetNvramPath(nvram, source, own);
            edit.Note($"nvram: '{path}' -> '{own}' (from the backup set's copy)");
        }
        else if (fileExists(path))
        {
            var own = edit.OwnPath(path);
            edit.Copy(path, own);
            SetNvramPath(nvram, source, own);
            edit.Note($"nvram: '{path}' -> '{own}' (a copy of the original's)");
        }
        else if (nvram.Attribute("template") is not null)
        {
            SetNvramPath(nvram, source, null);
            edit.Note($"nvram: '{path}' does not exist; the new VM gets a fresh one from its template");
        }
        else
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"the VM's NVRAM '{path}' does not exist and it names no template: the restored VM cannot get its own copy");
        }
    }

    private static void SetNvramPath(XElement nvram, XElement? source, string? path)
    {
        if (source is not null)
        {
            if (path is null)
            {
                source.Remove();
            }
            else
            {
                source.SetAttributeValue("file", path);
            }
        }
        else
        {
            nvram.Value = path ?? string.Empty;
        }
    }

    private static void RewriteDevice(XElement device, IReadOnlyDictionary<string, (string Path, string Format)> disks, RestoreEdit edit)
    {
        var kind = device.Name.LocalName;
        switch (kind)
        {
            case "disk":
                RewriteDisk(device, disks, edit);
                break;
            case "serial" or "console" or "parallel" or "channel":
                RewriteCharDevice(device, kind, edit);
                break;
            case "hostdev":
                device.Remove();
                edit.Note($"hostdev: {Describe(device.Element("source"))} removed (a host device passed through belongs to one VM, the original)");
                break;
            case "interface":
                RewriteInterface(device, edit);
                break;
            case "filesystem":
                device.Remove();
                edit.Note($"filesystem: host directory {Describe(device.Element("source"))} (guest '{(string?)device.Element("target")?.Attribute("dir")}') removed: it would be shared with the original");
                break;
            case "graphics":
                RewriteGraphics(device, edit);
                break;
            case "redirdev" or "smartcard" or "shmem" or "vsock":
                RewriteHostBackedDevice(device, kind, edit);
                break;
            case "tpm" when (string?)device.Element("backend")?.Attribute("type") == "passthrough":
                device.Remove();
                edit.Note($"tpm: passthrough of the host's {Describe(device.Element("backend")?.Element("device"))} removed (it belongs to the original)");
                break;
        }
    }

    private static void RewriteDisk(XElement disk, IReadOnlyDictionary<string, (string Path, string Format)> disks, RestoreEdit edit)
    {
        var target = (string?)disk.Element("target")?.Attribute("dev") ?? "?";
        if (disks.TryGetValue(target, out var restored))
        {
            edit.Note($"disk {target}: the restored image '{restored.Path}'");
            return;
        }

        var device = (string?)disk.Attribute("device") ?? "disk";
        var source = disk.Element("source");
        if (device is "cdrom" or "floppy")
        {
            if (source is not null)
            {
                source.Remove();
                disk.Elements("backingStore").Remove();
                edit.Note($"{device} {target}: {Describe(source)} ejected (not in the backup set; the drive stays, empty)");
            }

            return;
        }

        disk.Remove();
        var shared = disk.Element("shareable") is not null ? "a shareable disk, " : string.Empty;
        edit.Note($"disk {target}: {Describe(source)} removed ({shared}not in the backup set: it would be shared with the original)");
    }

    private static void RewriteCharDevice(XElement device, string kind, RestoreEdit edit)
    {
        var type = (string?)device.Attribute("type") ?? "pty";
        var port = (string?)device.Element("target")?.Attribute("port") ?? (string?)device.Element("target")?.Attribute("name") ?? "0";
        var label = $"{kind} {port}";
        if (device.Element("log") is { } log && (string?)log.Attribute("file") is { } logFile)
        {
            var own = edit.OwnFile(logFile);
            log.SetAttributeValue("file", own);
            edit.Note($"{label}: log file '{logFile}' -> '{own}'");
        }

        var source = device.Element("source");
        var path = (string?)source?.Attribute("path");
        switch (type)
        {
            case "file" when path is not null:
                var ownFile = edit.OwnFile(path);
                source!.SetAttributeValue("path", ownFile);
                edit.Note($"{label}: file '{path}' -> '{ownFile}'");
                break;
            case "unix" when path is not null && (string?)source!.Attribute("mode") == "connect":
                device.Remove();
                edit.Note($"{label}: connects to the host socket '{path}' of the original; removed");
                break;
            case "unix" when path is not null && kind == "channel":
                source!.Attribute("path")!.Remove();
                edit.Note($"{label}: socket '{path}' removed (libvirt makes the new VM its own)");
                break;
            case "unix" when path is not null:
                var ownSocket = edit.OwnFile(path);
                source!.SetAttributeValue("path", ownSocket);
                edit.Note($"{label}: socket '{path}' -> '{ownSocket}'");
                break;
            case "dev" or "pipe":
                device.Remove();
                edit.Note($"{label}: host {type} '{path}' removed (it belongs to the original)");
                break;
            case "tcp" or "udp" when kind is "serial" or "console" or "parallel":
                // A fixed host port the original listens on (the copy could not start beside it, or would take the
                // original's clients), or a peer that is the original's (console server, log host): the guest keeps
                // its port, backed by a pseudo-terminal of its own.
                var endpoint = Describe(source);
                device.SetAttributeValue("type", "pty");
                device.Elements("source").Remove();
                device.Elements("protocol").Remove();
                edit.Note($"{label}: {type} {endpoint} of the original -> pty (the guest keeps the port)");
                break;
            case "tcp" or "udp":
                device.Remove();
                edit.Note($"{label}: {type} {Describe(source)} of the original removed");
                break;
        }
    }

    /// <summary>A device whose backend is a host endpoint or resource that belongs to the original.</summary>
    private static void RewriteHostBackedDevice(XElement device, string kind, RestoreEdit edit)
    {
        var type = (string?)device.Attribute("type") ?? "?";
        switch (kind)
        {
            case "redirdev" when type is "tcp":
                // USB redirected from a host endpoint; spicevmc redirection belongs to the VM's own display.
                device.Remove();
                edit.Note($"redirdev: USB redirected from tcp {Describe(device.Element("source"))} of the original removed");
                break;
            case "smartcard":
                var mode = (string?)device.Attribute("mode") ?? "?";
                if (mode == "passthrough" && type is "spicevmc")
                {
                    break;
                }

                device.Remove();
                edit.Note(mode == "passthrough"
                    ? $"smartcard: passthrough over {type} {Describe(device.Element("source"))} of the original removed"
                    : $"smartcard: the host's card ({mode}) removed (it belongs to the original)");
                break;
            case "shmem":
                // A named host shared-memory region: the copy would read and write the original's memory.
                device.Remove();
                edit.Note($"shmem: host shared memory '{(string?)device.Attribute("name")}' removed: it would be shared with the original");
                break;
            case "vsock" when device.Element("cid") is { } cid && (string?)cid.Attribute("auto") != "yes":
                var address = (string?)cid.Attribute("address");
                cid.SetAttributeValue("auto", "yes");
                cid.Attribute("address")?.Remove();
                edit.Note($"vsock: fixed guest CID {address} -> auto (two VMs cannot have one CID)");
                break;
        }
    }

    private static void RewriteInterface(XElement device, RestoreEdit edit)
    {
        if ((string?)device.Attribute("type") == "hostdev")
        {
            device.Remove();
            edit.Note($"interface: host device {Describe(device.Element("source")?.Element("address"))} removed (passthrough belongs to the original)");
            return;
        }

        if ((string?)device.Attribute("type") is "vhostuser" or "server" or "client" or "mcast" or "udp" && device.Element("source") is { } endpoint)
        {
            // A switch port socket (vhost-user) or a socket tunnel to peers: the copy would take the original's link.
            device.Remove();
            edit.Note($"interface: {(string?)device.Attribute("type")} {Describe(endpoint)} of the original removed");
            return;
        }

        if (device.Element("target") is { } target && (string?)target.Attribute("dev") is { } dev)
        {
            target.Remove();
            edit.Note($"interface: fixed device name '{dev}' removed (libvirt names the new VM's own)");
        }
    }

    private static void RewriteGraphics(XElement graphics, RestoreEdit edit)
    {
        var type = (string?)graphics.Attribute("type") ?? "?";
        var ports = new[] { "port", "tlsPort", "websocket" }
            .Select(a => graphics.Attribute(a))
            .Where(a => a is not null && a.Value != "-1" && a.Value != "0")
            .ToList();
        if (ports.Count > 0 && (string?)graphics.Attribute("autoport") != "yes")
        {
            var fixedPorts = string.Join(", ", ports.Select(a => $"{a!.Name.LocalName} {a.Value}"));
            foreach (var attribute in ports)
            {
                attribute!.Remove();
            }

            graphics.SetAttributeValue("autoport", "yes");
            edit.Note($"graphics {type}: fixed {fixedPorts} -> autoport");
        }

        foreach (var listen in graphics.Elements("listen").Where(l => l.Attribute("socket") is not null).ToList())
        {
            var socket = (string)listen.Attribute("socket")!;
            listen.Attribute("socket")!.Remove();
            edit.Note($"graphics {type}: socket '{socket}' removed (libvirt makes the new VM its own)");
        }

        if ((string?)graphics.Attribute("socket") is { } direct)
        {
            graphics.Attribute("socket")!.Remove();
            edit.Note($"graphics {type}: socket '{direct}' removed (libvirt makes the new VM its own)");
        }
    }

    private static string Describe(XElement? source) =>
        source is null
            ? "(no source)"
            : string.Join(" ", source.Attributes().Select(a => $"{a.Name.LocalName}='{a.Value}'")) is { Length: > 0 } text
                ? text
                : source.Value.Trim() is { Length: > 0 } value ? $"'{value}'" : "(no source)";

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

    /// <summary>The changes of one restore, and the new VM's own file names (one per original file, reused).</summary>
    private sealed class RestoreEdit(string oldName, string newName, string? filesDirectory)
    {
        private readonly Dictionary<string, string> _own = new(StringComparer.Ordinal);

        public List<string> Changes { get; } = [];

        public List<(string From, string To)> Copies { get; } = [];

        public List<string> NewFiles { get; } = [];

        public void Note(string change) => Changes.Add(change);

        public void Copy(string from, string to) => Copies.Add((from, to));

        /// <summary>A file the new VM creates (log, console): must not exist yet.</summary>
        public string OwnFile(string original)
        {
            var own = OwnPath(original);
            if (!NewFiles.Contains(own, StringComparer.Ordinal))
            {
                NewFiles.Add(own);
            }

            return own;
        }

        /// <summary>
        /// Beside the original, the original VM's name in the file name replaced by the new one
        /// (<c>web-1.log</c> -> <c>copy.log</c>), else the new name put in front (<c>copy-serial.log</c>).
        /// </summary>
        public string OwnPath(string original)
        {
            if (_own.TryGetValue(original, out var known))
            {
                return known;
            }

            var directory = filesDirectory ?? Path.GetDirectoryName(original) ?? "/";
            var file = Path.GetFileName(original);
            var own = oldName.Length > 0 && file.StartsWith(oldName, StringComparison.Ordinal) && (file.Length == oldName.Length || file[oldName.Length] is '.' or '-' or '_')
                ? newName + file[oldName.Length..]
                : $"{newName}-{file}";
            var path = Path.Combine(directory, own);

            // Files of several directories gathered into one: two originals of one name get distinct own files.
            for (var n = 2; _own.ContainsValue(path); n++)
            {
                path = Path.Combine(directory, $"{n}-{own}");
            }

            return _own[original] = path;
        }
    }
}
