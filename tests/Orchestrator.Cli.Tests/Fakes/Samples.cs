using Google.Protobuf.WellKnownTypes;
using Google.Rpc;
using Grpc.Core;
using Orchestrator.Api.V1;

namespace Orchestrator.Cli.Tests.Fakes;

/// <summary>Sample protobuf messages as a server would send them.</summary>
internal static class Samples
{
    /// <summary>Has milliseconds, which JSON and tables truncate.</summary>
    public static readonly DateTime SyncTime = new(2025, 1, 31, 22, 4, 5, 678, DateTimeKind.Utc);

    public static Host OnlineHost() => new()
    {
        Name = "kvm-01",
        Uri = "qemu:///system",
        Online = true,
        Silo = "10.0.0.1:11111",
        Driver = "libvirt",
        LibvirtVersion = "10.0.0",
        HypervisorVersion = "8.2.2",
        VmCount = 2,
        LastSync = Timestamp.FromDateTime(SyncTime),
    };

    public static Host OfflineHost() => new()
    {
        Name = "kvm-02",
        Uri = "qemu+ssh://kvm-02/system",
        Online = false,
        Driver = "libvirt",
        VmCount = 1,
        LastSyncError = "connection reset by peer",
    };

    public static Vm RunningVm() => new()
    {
        Key = "kvm-01/web-1",
        Host = "kvm-01",
        Name = "web-1",
        Uuid = "6f1c0a0e-5a7b-4b8e-9d3c-2b1f0e9a7c11",
        PowerState = PowerState.Running,
        Disks =
        {
            new Disk { Target = "vda", SourcePath = "/var/lib/libvirt/images/web-1.qcow2", Format = "qcow2", ChainDepth = 2 },
            new Disk { Target = "vdb", SourcePath = "/var/lib/libvirt/images/web+1-data.raw", Format = "raw", ChainDepth = 1 },
        },
        Labels = { ["tier"] = "web", ["env"] = "prod" },
        MemoryKib = 4 * 1024 * 1024,
        Vcpus = 4,
        LastSync = Timestamp.FromDateTime(SyncTime),
        Present = true,
    };

    public static Vm ShutOffVm() => new()
    {
        Key = "kvm-01/db-1",
        Host = "kvm-01",
        Name = "db-1",
        Uuid = "0b4d9c36-1f5e-4c0f-8a55-6f2e3d1c9b00",
        PowerState = PowerState.ShutOff,
        MemoryKib = 512 * 1024,
        Vcpus = 1,
        Present = true,
    };

    public static Vm VmOn(string host, string name) => new()
    {
        Key = $"{host}/{name}",
        Host = host,
        Name = name,
        Uuid = Guid.NewGuid().ToString(),
        PowerState = PowerState.Running,
        Present = true,
    };

    public static DiskChain Chain() => new()
    {
        Key = "kvm-01/web-1/vda",
        Host = "kvm-01",
        Vm = "web-1",
        Target = "vda",
        Layers =
        {
            // Deliberately out of order: the CLI sorts by depth.
            new ChainLayer { Path = "/var/lib/libvirt/images/web-1.qcow2", Format = "qcow2", Depth = 1 },
            new ChainLayer { Path = "/var/lib/libvirt/images/web-1.orch-r42.qcow2", Format = "qcow2", Depth = 0 },
        },
        LastReconciled = Timestamp.FromDateTime(SyncTime),
    };

    /// <summary>A failure the way the server sends it: a google.rpc.Status with details in the trailers.</summary>
    public static RpcException RichError(Code code, string message, params Google.Protobuf.IMessage[] details)
    {
        var status = new Google.Rpc.Status { Code = (int)code, Message = message };
        foreach (Google.Protobuf.IMessage detail in details)
        {
            status.Details.Add(Any.Pack(detail));
        }

        return status.ToRpcException();
    }

    public static ErrorInfo HostUnavailable(string host) => new()
    {
        Reason = "HOST_UNAVAILABLE",
        Domain = "orchestrator.v1",
        Metadata = { ["host"] = host },
    };

    public static BadRequest BadField(string field, string description) => new()
    {
        FieldViolations = { new BadRequest.Types.FieldViolation { Field = field, Description = description } },
    };
}
