using System.Xml.Linq;
using Orchestrator.Grains.Backups;

namespace Orchestrator.UnitTests.Domain;

/// <summary>
/// The restored VM's definition shares nothing with the original: each element, on a definition shaped as
/// <c>virsh dumpxml --inactive</c> of libvirt 9 prints it (UEFI guest with a logged serial console, agent channel,
/// VNC on a fixed port, a passthrough device, a shared host directory, a fixed tap name, a static SELinux label).
/// </summary>
public sealed class DomainXmlEditorTests
{
    private const string Original = """
        <domain type='kvm'>
          <name>web-1</name>
          <uuid>5c1b0e55-7b0a-4e4b-9a55-0d6f4c1c2a11</uuid>
          <genid>2e9b7c1a-31a0-4b6e-8a52-0a8c3f4d9e10</genid>
          <memory unit='KiB'>1048576</memory>
          <vcpu placement='static'>1</vcpu>
          <os>
            <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
            <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
            <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/web-1_VARS.fd</nvram>
            <boot dev='hd'/>
          </os>
          <devices>
            <emulator>/usr/bin/qemu-system-x86_64</emulator>
            <disk type='file' device='disk'>
              <driver name='qemu' type='qcow2'/>
              <source file='/var/lib/libvirt/images/web-1.qcow2'/>
              <target dev='vda' bus='virtio'/>
              <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
            </disk>
            <disk type='file' device='disk'>
              <driver name='qemu' type='raw'/>
              <source file='/srv/shared/cluster-quorum.raw'/>
              <target dev='vdb' bus='virtio'/>
              <shareable/>
            </disk>
            <disk type='file' device='cdrom'>
              <driver name='qemu' type='raw'/>
              <source file='/srv/iso/debian-12.iso'/>
              <target dev='sda' bus='sata'/>
              <readonly/>
            </disk>
            <filesystem type='mount' accessmode='passthrough'>
              <driver type='virtiofs'/>
              <source dir='/srv/www'/>
              <target dir='www'/>
            </filesystem>
            <interface type='network'>
              <mac address='52:54:00:6b:3c:58'/>
              <source network='default'/>
              <target dev='vnet-web1'/>
              <model type='virtio'/>
            </interface>
            <serial type='file'>
              <source path='/var/log/libvirt/qemu/web-1-serial0.log' append='on'/>
              <log file='/var/log/libvirt/qemu/web-1-serial0.raw.log' append='off'/>
              <target type='isa-serial' port='0'>
                <model name='isa-serial'/>
              </target>
            </serial>
            <console type='file'>
              <source path='/var/log/libvirt/qemu/web-1-serial0.log' append='on'/>
              <log file='/var/log/libvirt/qemu/web-1-serial0.raw.log' append='off'/>
              <target type='serial' port='0'/>
            </console>
            <channel type='unix'>
              <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/web-1.org.qemu.guest_agent.0'/>
              <target type='virtio' name='org.qemu.guest_agent.0'/>
              <address type='virtio-serial' controller='0' bus='0' port='1'/>
            </channel>
            <serial type='unix'>
              <source mode='connect' path='/run/serial-concentrator.sock'/>
              <target type='isa-serial' port='1'/>
            </serial>
            <graphics type='vnc' port='5901' autoport='no' listen='127.0.0.1'>
              <listen type='address' address='127.0.0.1'/>
            </graphics>
            <hostdev mode='subsystem' type='pci' managed='yes'>
              <source>
                <address domain='0x0000' bus='0x3b' slot='0x00' function='0x1'/>
              </source>
            </hostdev>
            <tpm model='tpm-crb'>
              <backend type='passthrough'>
                <device path='/dev/tpm0'/>
              </backend>
            </tpm>
            <memballoon model='virtio'/>
          </devices>
          <seclabel type='static' model='selinux' relabel='yes'>
            <label>system_u:system_r:svirt_t:s0:c11,c22</label>
          </seclabel>
        </domain>
        """;

    private static readonly Dictionary<string, (string Path, string Format)> Restored = new()
    {
        ["vda"] = ("/var/lib/libvirt/images/web-1-copy-vda.qcow2", "qcow2"),
    };

    private static (XElement Xml, RestoredDefinition Definition) Restore(Func<string, bool>? exists = null, string xml = Original)
    {
        var definition = DomainXmlEditor.ForRestore(xml, "web-1-copy", Restored, exists ?? (_ => true));
        return (XElement.Parse(definition.Xml), definition);
    }

    private static XElement Devices(XElement domain) => domain.Element("devices")!;

    [Fact]
    public void ForRestore_NameUuidGenidMacs_NewNameAndNoneOfTheOriginalIdentities()
    {
        var (xml, definition) = Restore();

        Assert.Equal("web-1-copy", xml.Element("name")!.Value);
        Assert.Null(xml.Element("uuid"));
        Assert.Equal(string.Empty, xml.Element("genid")!.Value);
        Assert.Empty(xml.Descendants("mac"));
        Assert.Contains(definition.Changes, c => c.StartsWith("uuid:", StringComparison.Ordinal));
        Assert.Contains(definition.Changes, c => c.StartsWith("MAC addresses: 1 removed", StringComparison.Ordinal));
    }

    [Fact]
    public void ForRestore_SerialAndConsoleFilesAndLogs_RewrittenToTheNewVmsOwnFiles()
    {
        var (xml, definition) = Restore();

        var serial = Devices(xml).Elements("serial").Single(s => (string?)s.Attribute("type") == "file");
        var console = Devices(xml).Element("console")!;
        Assert.Equal("/var/log/libvirt/qemu/web-1-copy-serial0.log", (string?)serial.Element("source")!.Attribute("path"));
        Assert.Equal("/var/log/libvirt/qemu/web-1-copy-serial0.raw.log", (string?)serial.Element("log")!.Attribute("file"));

        // The console mirrors the serial port: the same new file, not a third one.
        Assert.Equal((string?)serial.Element("source")!.Attribute("path"), (string?)console.Element("source")!.Attribute("path"));
        Assert.Equal((string?)serial.Element("log")!.Attribute("file"), (string?)console.Element("log")!.Attribute("file"));
        Assert.Equal(["/var/log/libvirt/qemu/web-1-copy-serial0.raw.log", "/var/log/libvirt/qemu/web-1-copy-serial0.log"], definition.NewFiles);
        Assert.DoesNotContain("/var/log/libvirt/qemu/web-1-serial0", definition.Xml, StringComparison.Ordinal);
        Assert.Contains("serial 0: file '/var/log/libvirt/qemu/web-1-serial0.log' -> '/var/log/libvirt/qemu/web-1-copy-serial0.log'", definition.Changes);
    }

    [Fact]
    public void ForRestore_FileNameWithoutTheVmName_NewNamePutInFront()
    {
        var xml = Original.Replace("web-1-serial0.log", "console.log", StringComparison.Ordinal);

        var (restored, _) = Restore(xml: xml);

        var serial = Devices(restored).Elements("serial").Single(s => (string?)s.Attribute("type") == "file");
        Assert.Equal("/var/log/libvirt/qemu/web-1-copy-console.log", (string?)serial.Element("source")!.Attribute("path"));
    }

    [Fact]
    public void ForRestore_NvramFileExists_CopiedToTheNewVmsOwnPath()
    {
        var (xml, definition) = Restore(exists: _ => true);

        Assert.Equal("/var/lib/libvirt/qemu/nvram/web-1-copy_VARS.fd", xml.Element("os")!.Element("nvram")!.Value);
        Assert.Equal([("/var/lib/libvirt/qemu/nvram/web-1_VARS.fd", "/var/lib/libvirt/qemu/nvram/web-1-copy_VARS.fd")], definition.FilesToCopy);
    }

    [Fact]
    public void ForRestore_NvramGoneWithTemplate_FreshOneFromTheTemplate()
    {
        var (xml, definition) = Restore(exists: _ => false);

        var nvram = xml.Element("os")!.Element("nvram")!;
        Assert.Equal(string.Empty, nvram.Value);
        Assert.Equal("/usr/share/OVMF/OVMF_VARS_4M.fd", (string?)nvram.Attribute("template"));
        Assert.Empty(definition.FilesToCopy);
    }

    [Fact]
    public void ForRestore_NvramGoneWithoutTemplate_RefusedWithTheReason()
    {
        var xml = Original.Replace(" template='/usr/share/OVMF/OVMF_VARS_4M.fd'", "", StringComparison.Ordinal);

        var e = Assert.Throws<OrchestratorException>(() => Restore(exists: _ => false, xml: xml));

        Assert.Equal(ErrorCode.FailedPrecondition, e.Code);
        Assert.Contains("NVRAM '/var/lib/libvirt/qemu/nvram/web-1_VARS.fd' does not exist", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ForRestore_Disks_RestoredOneOwnImageSharedOneDroppedCdromEjected()
    {
        var (xml, definition) = Restore();

        var disks = Devices(xml).Elements("disk").ToList();
        Assert.Equal(["vda", "sda"], disks.Select(d => (string?)d.Element("target")!.Attribute("dev")));
        Assert.Equal("/var/lib/libvirt/images/web-1-copy-vda.qcow2", (string?)disks[0].Element("source")!.Attribute("file"));
        Assert.Null(disks[1].Element("source"));
        Assert.DoesNotContain("/srv/shared/cluster-quorum.raw", definition.Xml, StringComparison.Ordinal);
        Assert.DoesNotContain("/srv/iso", definition.Xml, StringComparison.Ordinal);
        Assert.Contains("disk vdb: file='/srv/shared/cluster-quorum.raw' removed (a shareable disk, not in the backup set: it would be shared with the original)", definition.Changes);
        Assert.Contains(definition.Changes, c => c.StartsWith("cdrom sda: file='/srv/iso/debian-12.iso' ejected", StringComparison.Ordinal));
    }

    [Fact]
    public void ForRestore_HostDevicesAndTpmPassthrough_RemovedWithTheReason()
    {
        var (xml, definition) = Restore();

        Assert.Empty(Devices(xml).Elements("hostdev"));
        Assert.Empty(Devices(xml).Elements("tpm"));
        Assert.Contains(definition.Changes, c => c.StartsWith("hostdev:", StringComparison.Ordinal) && c.Contains("belongs to one VM", StringComparison.Ordinal));
        Assert.Contains(definition.Changes, c => c.StartsWith("tpm: passthrough of the host's path='/dev/tpm0'", StringComparison.Ordinal));
    }

    [Fact]
    public void ForRestore_GuestAgentChannelSocket_PathLeftToLibvirt()
    {
        var (xml, definition) = Restore();

        var channel = Devices(xml).Element("channel")!;
        Assert.Null(channel.Element("source")!.Attribute("path"));
        Assert.Equal("bind", (string?)channel.Element("source")!.Attribute("mode"));
        Assert.Contains(definition.Changes, c => c.StartsWith("channel org.qemu.guest_agent.0: socket", StringComparison.Ordinal));
    }

    [Fact]
    public void ForRestore_SerialConnectingToAHostSocket_Removed()
    {
        var (xml, definition) = Restore();

        Assert.DoesNotContain("/run/serial-concentrator.sock", definition.Xml, StringComparison.Ordinal);
        Assert.Single(Devices(xml).Elements("serial"));
        Assert.Contains("serial 1: connects to the host socket '/run/serial-concentrator.sock' of the original; removed", definition.Changes);
    }

    [Fact]
    public void ForRestore_VncOnAFixedPort_Autoport()
    {
        var (xml, definition) = Restore();

        var graphics = Devices(xml).Element("graphics")!;
        Assert.Equal("yes", (string?)graphics.Attribute("autoport"));
        Assert.Null(graphics.Attribute("port"));
        Assert.Contains("graphics vnc: fixed port 5901 -> autoport", definition.Changes);
    }

    [Fact]
    public void ForRestore_FilesystemStaticSeclabelFixedTapName_Removed()
    {
        var (xml, definition) = Restore();

        Assert.Empty(Devices(xml).Elements("filesystem"));
        Assert.Null(xml.Element("seclabel"));
        Assert.Null(Devices(xml).Element("interface")!.Element("target"));
        Assert.Contains(definition.Changes, c => c.StartsWith("filesystem: host directory dir='/srv/www'", StringComparison.Ordinal));
        Assert.Contains(definition.Changes, c => c.StartsWith("seclabel: static label 'system_u:system_r:svirt_t:s0:c11,c22' removed", StringComparison.Ordinal));
        Assert.Contains("interface: fixed device name 'vnet-web1' removed (libvirt names the new VM's own)", definition.Changes);
    }

    private const string NetworkBacked = """
        <domain type='kvm'>
          <name>web-1</name>
          <devices>
            <serial type='tcp'>
              <source mode='bind' host='0.0.0.0' service='4555'/>
              <protocol type='telnet'/>
              <target port='0'/>
            </serial>
            <serial type='udp'>
              <source mode='connect' host='10.0.0.9' service='514'/>
              <target port='1'/>
            </serial>
            <channel type='tcp'>
              <source mode='connect' host='10.0.0.7' service='9999'/>
              <target type='virtio' name='org.example.telemetry'/>
            </channel>
            <redirdev bus='usb' type='tcp'>
              <source mode='connect' host='10.0.0.5' service='4000'/>
            </redirdev>
            <redirdev bus='usb' type='spicevmc'/>
            <smartcard mode='passthrough' type='tcp'>
              <source mode='bind' host='127.0.0.1' service='2001'/>
            </smartcard>
            <smartcard mode='host'/>
            <shmem name='web-1-ivshmem'>
              <model type='ivshmem-plain'/>
              <size unit='M'>4</size>
            </shmem>
            <vsock model='virtio'>
              <cid auto='no' address='42'/>
            </vsock>
            <interface type='vhostuser'>
              <source type='unix' path='/run/openvswitch/vhu-web1' mode='client'/>
              <model type='virtio'/>
            </interface>
            <interface type='network'>
              <source network='default'/>
            </interface>
          </devices>
        </domain>
        """;

    [Fact]
    public void ForRestore_NetworkBackedCharDevicesAndHostEndpoints_NoneOfTheOriginalsKept()
    {
        var definition = DomainXmlEditor.ForRestore(NetworkBacked, "web-1-copy", new Dictionary<string, (string Path, string Format)>(), _ => true);
        var devices = Devices(XElement.Parse(definition.Xml));

        // The guest keeps its serial ports, on pseudo-terminals of its own; nothing names the original's ports or peers.
        Assert.Equal(["pty", "pty"], devices.Elements("serial").Select(d => (string?)d.Attribute("type")));
        Assert.Empty(devices.Elements("serial").Elements("source"));
        Assert.Empty(devices.Elements("serial").Elements("protocol"));
        Assert.Empty(devices.Elements("channel"));
        Assert.Equal(["spicevmc"], devices.Elements("redirdev").Select(d => (string?)d.Attribute("type")));
        Assert.Empty(devices.Elements("smartcard"));
        Assert.Empty(devices.Elements("shmem"));
        var cid = devices.Element("vsock")!.Element("cid")!;
        Assert.Equal(("yes", null), ((string?)cid.Attribute("auto"), (string?)cid.Attribute("address")));
        Assert.Equal(["network"], devices.Elements("interface").Select(d => (string?)d.Attribute("type")));
        foreach (var original in new[] { "4555", "10.0.0.9", "10.0.0.7", "10.0.0.5", "2001", "web-1-ivshmem", "vhu-web1" })
        {
            Assert.DoesNotContain(original, definition.Xml, StringComparison.Ordinal);
        }

        Assert.Contains("serial 0: tcp mode='bind' host='0.0.0.0' service='4555' of the original -> pty (the guest keeps the port)", definition.Changes);
        Assert.Contains(definition.Changes, c => c.StartsWith("channel org.example.telemetry: tcp", StringComparison.Ordinal));
        Assert.Contains(definition.Changes, c => c.StartsWith("redirdev: USB redirected from tcp", StringComparison.Ordinal));
        Assert.Contains(definition.Changes, c => c.StartsWith("smartcard: passthrough over tcp", StringComparison.Ordinal));
        Assert.Contains("smartcard: the host's card (host) removed (it belongs to the original)", definition.Changes);
        Assert.Contains("shmem: host shared memory 'web-1-ivshmem' removed: it would be shared with the original", definition.Changes);
        Assert.Contains("vsock: fixed guest CID 42 -> auto (two VMs cannot have one CID)", definition.Changes);
        Assert.Contains(definition.Changes, c => c.StartsWith("interface: vhostuser", StringComparison.Ordinal));
    }

    [Fact]
    public void ForRestore_NoPathOfTheOriginalLeft_ExceptSharedReadOnlyFirmware()
    {
        var (_, definition) = Restore();

        // Only the read-only firmware, the NVRAM template and the emulator binary remain: host files no VM writes.
        var paths = XElement.Parse(definition.Xml).DescendantsAndSelf()
            .SelectMany(e => e.Attributes().Select(a => a.Value).Append(e.HasElements ? "" : e.Value))
            .Where(v => v.StartsWith('/'))
            .Distinct()
            .Order()
            .ToList();
        Assert.Equal(
            ["/usr/bin/qemu-system-x86_64", "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd", "/var/lib/libvirt/images/web-1-copy-vda.qcow2", "/var/lib/libvirt/qemu/nvram/web-1-copy_VARS.fd", "/var/log/libvirt/qemu/web-1-copy-serial0.log", "/var/log/libvirt/qemu/web-1-copy-serial0.raw.log"],
            paths);
    }
}
