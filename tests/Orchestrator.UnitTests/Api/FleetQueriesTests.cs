using Orchestrator.Silo.Services;

namespace Orchestrator.UnitTests.Api;

/// <summary>FleetService's compliance filter and overlay listing.</summary>
public sealed class FleetQueriesTests
{
    private static readonly DateTimeOffset At = new(2026, 11, 26, 2, 0, 0, TimeSpan.Zero);

    private static PolicyCompliance Covered(string policy, ComplianceStatus status) =>
        new(policy, PolicyKind.LiveBackup, 1, status == ComplianceStatus.Never ? null : At, TimeSpan.FromHours(26), status);

    private static VmCompliance Vm(string host, string name, ComplianceStatus status, params PolicyCompliance[] policies) =>
        new(host, name, true, policies, status, null, null);

    private static readonly VmCompliance[] Fleet =
    [
        Vm("kvm-02", "web-2", ComplianceStatus.OutOfRpo, Covered("nightly", ComplianceStatus.OutOfRpo)),
        Vm("kvm-01", "web-1", ComplianceStatus.Never, Covered("nightly", ComplianceStatus.Ok), Covered("hourly", ComplianceStatus.Never)),
        Vm("kvm-01", "db-1", ComplianceStatus.Unprotected),
    ];

    private static string[] Keys(IEnumerable<VmCompliance> vms) => [.. vms.Select(v => v.Key)];

    [Fact]
    public void FilterCompliance_NoFilter_AllSortedByHostThenVm()
    {
        Assert.Equal(["kvm-01/db-1", "kvm-01/web-1", "kvm-02/web-2"], Keys(FleetQueries.FilterCompliance(Fleet, "", "", null)));
    }

    [Fact]
    public void FilterCompliance_Host_OnlyThatHostsVms()
    {
        Assert.Equal(["kvm-01/db-1", "kvm-01/web-1"], Keys(FleetQueries.FilterCompliance(Fleet, "kvm-01", "", null)));
    }

    [Fact]
    public void FilterCompliance_Status_ComparesTheVmsOverallStatus()
    {
        Assert.Equal(["kvm-01/web-1"], Keys(FleetQueries.FilterCompliance(Fleet, "", "", ComplianceStatus.Never)));
        Assert.Equal(["kvm-01/db-1"], Keys(FleetQueries.FilterCompliance(Fleet, "", "", ComplianceStatus.Unprotected)));
    }

    [Fact]
    public void FilterCompliance_Policy_OnlyVmsItSelects()
    {
        Assert.Equal(["kvm-01/web-1", "kvm-02/web-2"], Keys(FleetQueries.FilterCompliance(Fleet, "", "nightly", null)));
        Assert.Empty(FleetQueries.FilterCompliance(Fleet, "", "weekly", null));
    }

    [Fact]
    public void FilterCompliance_PolicyAndStatus_ComparesThatPolicysStatusNotTheOverallOne()
    {
        // web-1 is "never" overall (because of hourly) but ok for nightly.
        Assert.Equal(["kvm-01/web-1"], Keys(FleetQueries.FilterCompliance(Fleet, "", "nightly", ComplianceStatus.Ok)));
        Assert.Empty(FleetQueries.FilterCompliance(Fleet, "", "nightly", ComplianceStatus.Never));
    }

    private static (string, string, bool, DiskView) Disk(string host, string vm, string target, string path, int depth, bool present = true) =>
        (host, vm, present, new DiskView(target, path, "qcow2", depth));

    private static readonly (string, string, bool, DiskView)[] Disks =
    [
        Disk("kvm-02", "web-2", "vda", "/var/lib/libvirt/images/web-2.vda.orch-p-1.qcow2", 2),
        Disk("kvm-01", "web-1", "vdb", "/var/lib/libvirt/images/web-1-data.raw", 1),
        Disk("kvm-01", "web-1", "vda", "/var/lib/libvirt/images/web-1.snap.qcow2", 3),
        Disk("kvm-01", "gone", "vda", "/var/lib/libvirt/images/gone.orch-b-1.qcow2", 2, present: false),
    ];

    [Fact]
    public void Overlays_Default_OnlyDisksDeeperThanOneOfPresentVms_Sorted()
    {
        var disks = FleetQueries.Overlays(Disks, all: false).ToList();

        Assert.Equal(["kvm-01/web-1/vda", "kvm-02/web-2/vda"], disks.Select(d => $"{d.Host}/{d.Vm}/{d.Disk}"));
        Assert.Equal(3, disks[0].ChainDepth);
        Assert.Equal("/var/lib/libvirt/images/web-1.snap.qcow2", disks[0].ActivePath);
        Assert.False(disks[0].OrchestratorOverlay);
        Assert.True(disks[1].OrchestratorOverlay);
    }

    [Fact]
    public void Overlays_All_EveryDiskOfPresentVmsWithItsDepth()
    {
        var disks = FleetQueries.Overlays(Disks, all: true).ToList();

        Assert.Equal(["kvm-01/web-1/vda", "kvm-01/web-1/vdb", "kvm-02/web-2/vda"], disks.Select(d => $"{d.Host}/{d.Vm}/{d.Disk}"));
        Assert.Equal(1, disks[1].ChainDepth);
    }

    [Theory]
    [InlineData("/var/lib/libvirt/images/web-1.vda.orch-b-20261126.qcow2", true)]
    [InlineData("/srv/x.orch-p/web-1.qcow2", false)]
    [InlineData("/var/lib/libvirt/images/web-1.qcow2", false)]
    public void IsOrchestratorOverlay_JudgesTheFileNameOnly(string path, bool expected)
    {
        Assert.Equal(expected, FleetQueries.IsOrchestratorOverlay(path));
    }
}
