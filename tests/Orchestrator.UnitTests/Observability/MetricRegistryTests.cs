using Orchestrator.Grains;
using Orchestrator.Grains.Backups;
using Orchestrator.Grains.Fleet;

namespace Orchestrator.UnitTests.Observability;

/// <summary>
/// The per-silo registries behind the observable instruments: what they report when activations come and go. Each
/// test uses its own host or fleet name, so measurements of clusters running in the same process do not mix in.
/// </summary>
public sealed class MetricRegistryTests : IDisposable
{
    private readonly MetricCapture _metrics = new();

    public void Dispose() => _metrics.Dispose();

    private double Observed(string instrument, string host) =>
        Assert.Single(_metrics.Observe(), m => m.Instrument == instrument && m.Tag("host") == host).Value;

    private static BackupRunState Run(BackupStep step, int disks, int committed = 0) => new()
    {
        RunId = "b-1",
        Step = step,
        Disks = [.. Enumerable.Range(0, disks).Select(i => new BackupDiskState { Target = $"vd{(char)('a' + i)}", Committed = i < committed })],
    };

    [Fact]
    public void BackupGauges_RunResumedByANewActivation_CountedOnceAndZeroWhenItEnds()
    {
        const string Host = "gauge-host-1";
        object first = new(), second = new();

        BackupGauges.Track(first, Host, Run(BackupStep.Quiesce, 2));
        var beforeOverlays = (Observed(Telemetry.ActiveBackupsName, Host), Observed(Telemetry.OverlaysAliveName, Host));
        BackupGauges.Track(first, Host, Run(BackupStep.Copying, 2));
        var copying = (Observed(Telemetry.ActiveBackupsName, Host), Observed(Telemetry.OverlaysAliveName, Host));

        // The activation goes away mid-copy (its silo restarts, or the grain moves); the next one resumes the run.
        BackupGauges.Forget(first);
        BackupGauges.Track(second, Host, Run(BackupStep.Copying, 2));
        var resumed = (Observed(Telemetry.ActiveBackupsName, Host), Observed(Telemetry.OverlaysAliveName, Host));
        BackupGauges.Track(second, Host, Run(BackupStep.Committing, 2, committed: 1));
        var oneCommitted = Observed(Telemetry.OverlaysAliveName, Host);
        BackupGauges.Track(second, Host, Run(BackupStep.Completed, 2, committed: 2));
        var ended = (Observed(Telemetry.ActiveBackupsName, Host), Observed(Telemetry.OverlaysAliveName, Host));

        Assert.Equal((1.0, 0.0), beforeOverlays);
        Assert.Equal((1.0, 2.0), copying);
        Assert.Equal((1.0, 2.0), resumed);
        Assert.Equal(1.0, oneCommitted);
        Assert.Equal((0.0, 0.0), ended);
    }

    [Fact]
    public void BackupGauges_TwoVmsOfOneHost_SummedPerHost()
    {
        const string Host = "gauge-host-2";
        object a = new(), b = new();

        BackupGauges.Track(a, Host, Run(BackupStep.OverlayActive, 1));
        BackupGauges.Track(b, Host, Run(BackupStep.Copying, 3, committed: 1));
        var both = (Observed(Telemetry.ActiveBackupsName, Host), Observed(Telemetry.OverlaysAliveName, Host));
        BackupGauges.Track(a, Host, null);
        BackupGauges.Forget(b);

        Assert.Equal((2.0, 3.0), both);
        Assert.Equal((0.0, 0.0), (Observed(Telemetry.ActiveBackupsName, Host), Observed(Telemetry.OverlaysAliveName, Host)));
    }

    [Fact]
    public void ComplianceMetrics_ActivationMoves_OnlyTheLatestPublisherReportsAndItsWithdrawalEndsIt()
    {
        var fleet = $"fleet-{Guid.NewGuid():N}";
        object old = new(), moved = new();
        PolicyCompliance Under(string policy, ComplianceStatus status) => new(policy, PolicyKind.LiveBackup, 1, null, TimeSpan.Zero, status);
        VmCompliance Vm(string name, bool present, ComplianceStatus status, params PolicyCompliance[] policies) =>
            new("h", name, present, policies, status, null, null);

        ComplianceMetrics.Publish(old, fleet, ["p", "idle"], [Vm("a", true, ComplianceStatus.Unprotected)]);
        ComplianceMetrics.Publish(moved, fleet, ["p", "idle"],
        [
            Vm("a", true, ComplianceStatus.Ok, Under("p", ComplianceStatus.Ok)),
            Vm("b", true, ComplianceStatus.Never, Under("p", ComplianceStatus.Never)),
            Vm("c", true, ComplianceStatus.OutOfRpo, Under("p", ComplianceStatus.OutOfRpo)),
            Vm("d", true, ComplianceStatus.Unprotected),
            Vm("gone", false, ComplianceStatus.Never, Under("p", ComplianceStatus.Never)),
        ]);

        // The old activation deactivates after the new one published: its withdrawal must not remove the new numbers.
        ComplianceMetrics.Withdraw(old, fleet);
        var observed = _metrics.Observe().Where(m => m.Tag("fleet") == fleet).ToList();
        ComplianceMetrics.Withdraw(moved, fleet);
        var afterWithdraw = _metrics.Observe().Where(m => m.Tag("fleet") == fleet).ToList();

        var vms = observed.Where(m => m.Instrument == ComplianceMetrics.VmsName).ToDictionary(m => m.Tag("status")!, m => m.Value);
        Assert.Equal(new Dictionary<string, double> { ["ok"] = 1, ["out_of_rpo"] = 1, ["never"] = 1, ["unprotected"] = 1 }, vms);
        var perPolicy = observed.Where(m => m.Instrument == ComplianceMetrics.PolicyVmsName).ToDictionary(m => $"{m.Tag("policy")}:{m.Tag("status")}", m => m.Value);
        Assert.Equal(
            new Dictionary<string, double>
            {
                ["idle:ok"] = 0,
                ["idle:out_of_rpo"] = 0,
                ["idle:never"] = 0,
                ["p:ok"] = 1,
                ["p:out_of_rpo"] = 1,
                ["p:never"] = 1,
            },
            perPolicy);
        Assert.Empty(afterWithdraw);
    }
}
