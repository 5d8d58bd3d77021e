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

    public const string RunKey = "kvm-01/web-1/b-20261126-210000-3f9a1c";

    public static readonly DateTime RunStart = new(2026, 11, 26, 21, 0, 0, 250, DateTimeKind.Utc);

    /// <summary>A run in its copy step: vda half copied, vdb not started. Has every optional field set.</summary>
    public static BackupRun CopyingRun() => new()
    {
        Key = RunKey,
        Host = "kvm-01",
        Vm = "web-1",
        Step = BackupStep.Copying,
        StartedAt = Timestamp.FromDateTime(RunStart),
        BackupSetPath = "/srv/backups/kvm-01/web-1/b-20261126-210000-3f9a1c",
        QuiesceOutcome = "frozen (2 file systems)",
        FreezeMs = 12.5,
        TraceId = "4bf92f3577b34da6a3ce929d0e0e4736",
        Policy = "nightly",
        PolicyVersion = 3,
        PolicyRun = "p-20261126-210000-abc123",
        Version = 7,
        Disks =
        {
            new BackupDisk
            {
                Target = "vda",
                BasePath = "/var/lib/libvirt/images/web-1.qcow2",
                Format = "qcow2",
                OverlayPath = "/var/lib/libvirt/images/web-1.b-20261126-210000-3f9a1c.qcow2",
                BackupPath = "/srv/backups/kvm-01/web-1/b-20261126-210000-3f9a1c/vda.qcow2",
                BytesTotal = 2L << 30,
                BytesCopied = 1L << 30,
            },
            new BackupDisk
            {
                Target = "vdb",
                BasePath = "/var/lib/libvirt/images/web+1-data.raw",
                Format = "raw",
                OverlayPath = "/var/lib/libvirt/images/web+1-data.b-20261126-210000-3f9a1c.qcow2",
                BackupPath = "/srv/backups/kvm-01/web-1/b-20261126-210000-3f9a1c/vdb.raw",
                BytesTotal = 10L << 30,
                BytesCopied = 0,
            },
        },
        Steps =
        {
            new BackupStepRecord { Step = BackupStep.Admitted, At = Timestamp.FromDateTime(RunStart) },
            new BackupStepRecord { Step = BackupStep.Copying, At = Timestamp.FromDateTime(RunStart.AddSeconds(2)), Note = "2 disks" },
        },
    };

    /// <summary>The same run, completed 83 seconds after its start, copies verified.</summary>
    public static BackupRun CompletedRun()
    {
        BackupRun run = CopyingRun();
        run.Step = BackupStep.Completed;
        run.EndedAt = Timestamp.FromDateTime(RunStart.AddSeconds(83));
        foreach (BackupDisk disk in run.Disks)
        {
            disk.BytesCopied = disk.BytesTotal;
            disk.Sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
            disk.Committed = true;
            disk.Verified = true;
        }

        run.Steps.Add(new BackupStepRecord { Step = BackupStep.Completed, At = run.EndedAt });
        return run;
    }

    /// <summary>The same run, failed during the copy, rolled back; no trace, policy or checksums.</summary>
    public static BackupRun FailedRun()
    {
        BackupRun run = CopyingRun();
        run.Step = BackupStep.Failed;
        run.Error = "no space left on device";
        run.EndedAt = Timestamp.FromDateTime(RunStart.AddSeconds(30));
        run.TraceId = "";
        run.Policy = "";
        run.PolicyVersion = 0;
        run.PolicyRun = "";
        run.Steps.Add(new BackupStepRecord { Step = BackupStep.Failed, At = run.EndedAt });
        return run;
    }

    /// <summary>A run of <paramref name="key"/> (host/vm/run), admitted at <paramref name="started"/>.</summary>
    public static BackupRun RunOf(string key, DateTime started)
    {
        string[] parts = key.Split('/');
        return new BackupRun
        {
            Key = key,
            Host = parts[0],
            Vm = parts[1],
            Step = BackupStep.Admitted,
            StartedAt = Timestamp.FromDateTime(started),
        };
    }

    public static BackupRun WithStep(this BackupRun run, BackupStep step)
    {
        run.Step = step;
        return run;
    }

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
