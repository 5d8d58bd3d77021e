using Orchestrator.Grains.Fleet;
using Orchestrator.Grains.Storage;
using Orchestrator.Grains.VirtualMachines;

namespace Orchestrator.UnitTests.Domain;

public sealed class MessagePackSerializerTests
{
    private readonly MessagePackGrainStorageSerializer _serializer = new();

    [Fact]
    public void RoundTrip_VirtualMachineState_KeepsEveryField()
    {
        var state = new VirtualMachineState
        {
            Known = true,
            Uuid = Guid.NewGuid(),
            PowerState = VmPowerState.Running,
            Disks = [new VmDiskRecord { Target = "vda", SourcePath = "/images/a.qcow2", Format = "qcow2", ChainDepth = 2 }],
            Labels = new Dictionary<string, string> { ["tier"] = "web" },
            MemoryKiB = 131072,
            VirtualCpus = 2,
            FirstSeen = DateTimeOffset.Parse("2026-11-26T10:00:00+01:00", System.Globalization.CultureInfo.InvariantCulture),
            LastChanged = DateTimeOffset.UtcNow,
            Present = true,
        };

        var back = _serializer.Deserialize<VirtualMachineState>(_serializer.Serialize(state));

        Assert.Equal(state.Uuid, back.Uuid);
        Assert.Equal(state.PowerState, back.PowerState);
        Assert.Equal(state.Disks, back.Disks);
        Assert.Equal(state.Labels, back.Labels);
        Assert.Equal(state.FirstSeen, back.FirstSeen);
        Assert.Equal(state.FirstSeen.Offset, back.FirstSeen.Offset);
        Assert.Equal(state.LastChanged, back.LastChanged);
        Assert.True(back.Known && back.Present);
    }

    [Fact]
    public void Serialize_IsCompact_AndUsesIntegerKeys()
    {
        var state = new FleetState();
        state.Hosts["kvm-01"] = new HostRecord { Uri = "qemu:///system" };
        var bytes = _serializer.Serialize(state).ToArray();

        // Integer keys: the property names never appear in the payload.
        Assert.DoesNotContain("Hosts", System.Text.Encoding.UTF8.GetString(bytes), StringComparison.Ordinal);
        Assert.True(bytes.Length < 64, $"payload is {bytes.Length} bytes");
        Assert.Equal("qemu:///system", _serializer.Deserialize<FleetState>(new BinaryData(bytes)).Hosts["kvm-01"].Uri);
    }

    [Fact]
    public void Deserialize_Garbage_Throws() =>
        Assert.ThrowsAny<Exception>(() => _serializer.Deserialize<FleetState>(new BinaryData(new byte[] { 0xc1, 0xff, 0x00 })));
}
