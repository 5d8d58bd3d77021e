using Google.Protobuf.WellKnownTypes;
using Orchestrator.Api.V1;

namespace Orchestrator.Cli.Tests.Fakes;

/// <summary>Policies, policy runs, compliance and overlays as a server would send them.</summary>
internal static class PolicySamples
{
    public const string RunId = "p-20261126-020000-abc123";

    /// <summary>Has milliseconds, which JSON and tables truncate.</summary>
    public static readonly DateTime Start = new(2026, 11, 26, 2, 0, 0, 500, DateTimeKind.Utc);

    /// <summary>The spec of deploy/examples/nightly-live-backup.yaml, with every default filled in as the server returns it.</summary>
    public static PolicySpec NightlySpec() => new()
    {
        Name = "nightly-web",
        Kind = PolicyKind.LiveBackup,
        Description = "web tier",
        Selector = new PolicySelector { Hosts = { "kvm-*" }, Vms = { "web-*", "db-1" }, Labels = { ["tier"] = "web", ["backup"] = "*" } },
        Schedule = new PolicySchedule { Cron = "0 2 * * *", TimeZone = "Europe/Berlin" },
        Retention = new PolicyRetention { KeepLast = 7, Daily = 7, Weekly = 4, Monthly = 6 },
        Target = "/backups/{host}",
        Quiesce = QuiesceMode.Try,
        Verify = true,
        BandwidthBytesPerSecond = 100L << 20,
        Concurrency = new PolicyConcurrency { PerHost = 1, Fleet = 4 },
        Rpo = Duration.FromTimeSpan(TimeSpan.FromHours(26)),
    };

    public static Policy Nightly(int version = 3) => new()
    {
        Spec = NightlySpec(),
        Version = version,
        CreatedAt = Timestamp.FromDateTime(Start.AddDays(-10)),
        UpdatedAt = Timestamp.FromDateTime(Start.AddDays(-1)),
        NextRunAt = Timestamp.FromDateTime(Start.AddDays(1)),
        LastRun = PartialRun(),
        PendingRetries = { "kvm-03/web-3" },
    };

    /// <summary>An on-demand checkpoint policy that never ran: no schedule, target, next or last run.</summary>
    public static Policy Checkpoints() => new()
    {
        Spec = new PolicySpec
        {
            Name = "dev-checkpoints",
            Kind = PolicyKind.Checkpoint,
            Selector = new PolicySelector { Labels = { ["env"] = "dev" } },
            Retention = new PolicyRetention { KeepLast = 3, Hourly = 24 },
            Quiesce = QuiesceMode.Off,
            Verify = false,
            Concurrency = new PolicyConcurrency { PerHost = 2, Fleet = 10 },
        },
        Version = 1,
        CreatedAt = Timestamp.FromDateTime(Start),
        UpdatedAt = Timestamp.FromDateTime(Start),
    };

    public static PolicyTarget Target(string host, string vm, PolicyTargetStatus status, int attempts = 1) => new()
    {
        Host = host,
        Vm = vm,
        Status = status,
        Attempts = attempts,
    };

    /// <summary>Three VMs: web-1 backing up, web-2 waiting for a slot, web-3 (on a host that is down) not yet tried.</summary>
    public static PolicyRun RunningRun()
    {
        var run = new PolicyRun
        {
            RunId = RunId,
            Policy = "nightly-web",
            PolicyVersion = 3,
            Kind = PolicyKind.LiveBackup,
            Trigger = PolicyRunTrigger.Manual,
            State = PolicyRunState.Running,
            StartedAt = Timestamp.FromDateTime(Start),
            Concurrency = new PolicyConcurrency { PerHost = 1, Fleet = 4 },
            TraceId = "4bf92f3577b34da6a3ce929d0e0e4736",
            Version = 4,
        };
        PolicyTarget web1 = Target("kvm-01", "web-1", PolicyTargetStatus.Running);
        web1.AdmittedAt = Timestamp.FromDateTime(Start.AddSeconds(1));
        web1.BackupRun = "kvm-01/web-1/b-20261126-020001-0a0b0c";
        PolicyTarget web2 = Target("kvm-01", "web-2", PolicyTargetStatus.Pending, attempts: 0);
        web2.Reason = "host budget full (1)";
        PolicyTarget web3 = Target("kvm-03", "web-3", PolicyTargetStatus.Pending, attempts: 0);
        // Deliberately out of order: the CLI sorts targets by host, then VM.
        run.Targets.Add(web3);
        run.Targets.Add(web2);
        run.Targets.Add(web1);
        return run;
    }

    /// <summary>The same run, ended: web-1 and web-2 backed up, web-3 skipped because kvm-03's silo is down.</summary>
    public static PolicyRun PartialRun()
    {
        PolicyRun run = RunningRun();
        run.State = PolicyRunState.Partial;
        run.EndedAt = Timestamp.FromDateTime(Start.AddSeconds(95));
        run.Version = 9;
        foreach (PolicyTarget target in run.Targets)
        {
            switch (target.Vm)
            {
                case "web-1":
                    target.Status = PolicyTargetStatus.Succeeded;
                    target.ReleasedAt = Timestamp.FromDateTime(Start.AddSeconds(42));
                    break;
                case "web-2":
                    target.Status = PolicyTargetStatus.Succeeded;
                    target.Reason = "";
                    target.Attempts = 1;
                    target.BackupRun = "kvm-01/web-2/b-20261126-020042-0d0e0f";
                    target.AdmittedAt = Timestamp.FromDateTime(Start.AddSeconds(42));
                    target.ReleasedAt = Timestamp.FromDateTime(Start.AddSeconds(95));
                    break;
                default:
                    target.Status = PolicyTargetStatus.Skipped;
                    target.Reason = "host unavailable: no live silo serves host 'kvm-03'";
                    break;
            }
        }

        return run;
    }

    /// <summary>The run with every VM backed up.</summary>
    public static PolicyRun CompletedRun()
    {
        PolicyRun run = PartialRun();
        run.State = PolicyRunState.Completed;
        PolicyTarget web3 = run.Targets.Single(t => t.Vm == "web-3");
        web3.Status = PolicyTargetStatus.Succeeded;
        web3.Reason = "";
        web3.Attempts = 1;
        web3.BackupRun = "kvm-03/web-3/b-20261126-020043-101112";
        web3.AdmittedAt = Timestamp.FromDateTime(Start.AddSeconds(43));
        web3.ReleasedAt = Timestamp.FromDateTime(Start.AddSeconds(90));
        return run;
    }

    /// <summary>A run that could not start at all.</summary>
    public static PolicyRun FailedRun()
    {
        PolicyRun run = RunningRun();
        run.State = PolicyRunState.Failed;
        run.EndedAt = Timestamp.FromDateTime(Start.AddSeconds(2));
        run.Error = "the fleet index is empty";
        run.Targets.Clear();
        return run;
    }

    public static GetComplianceResponse Compliance() => new()
    {
        Vms =
        {
            new VmCompliance
            {
                Host = "kvm-02",
                Vm = "web-2",
                Present = true,
                Status = ComplianceStatus.Ok,
                LastBackupAt = Timestamp.FromDateTime(Start),
                Policies = { PolicyOf("nightly-web", ComplianceStatus.Ok, Start) },
            },
            new VmCompliance
            {
                Host = "kvm-01",
                Vm = "web-1",
                Present = true,
                Status = ComplianceStatus.OutOfRpo,
                LastBackupAt = Timestamp.FromDateTime(Start.AddDays(-3)),
                Policies = { PolicyOf("nightly-web", ComplianceStatus.OutOfRpo, Start.AddDays(-3)) },
            },
            new VmCompliance
            {
                Host = "kvm-01",
                Vm = "db-1",
                Present = true,
                Status = ComplianceStatus.Unprotected,
            },
        },
        UnavailableHosts = { "kvm-03" },
    };

    public static PolicyCompliance PolicyOf(string policy, ComplianceStatus status, DateTime? lastGood)
    {
        var compliance = new PolicyCompliance
        {
            Policy = policy,
            Kind = PolicyKind.LiveBackup,
            Version = 3,
            Rpo = Duration.FromTimeSpan(TimeSpan.FromHours(26)),
            Status = status,
        };
        if (lastGood is { } at)
        {
            compliance.LastGoodAt = Timestamp.FromDateTime(at);
        }

        return compliance;
    }

    public static ListOverlaysResponse Overlays() => new()
    {
        Disks =
        {
            new OverlayDisk { Host = "kvm-02", Vm = "db-1", Disk = "vda", ChainDepth = 3, ActivePath = "/var/lib/libvirt/images/db-1.snap2.qcow2" },
            new OverlayDisk
            {
                Host = "kvm-01",
                Vm = "web-1",
                Disk = "vda",
                ChainDepth = 2,
                ActivePath = "/var/lib/libvirt/images/web-1.vda.orch-b-20261126-020001-0a0b0c.qcow2",
                OrchestratorOverlay = true,
            },
        },
        UnavailableHosts = { "kvm-03" },
    };
}
