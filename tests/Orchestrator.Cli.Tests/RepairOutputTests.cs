using System.Text.Json;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Tests.Fakes;

namespace Orchestrator.Cli.Tests;

/// <summary><c>backup repair</c>: what it sends, what it prints, and its exit code when a disk is refused.</summary>
public sealed class RepairOutputTests
{
    private const string Overlay = "/img/web-1-vda.qcow2.orch-b-1.qcow2";

    private static FakeCallInvoker Invoker(params OverlayRepair[] disks) => new FakeCallInvoker().On<RepairOverlaysRequest, RepairOverlaysResponse>(
        "RepairOverlays",
        _ => new RepairOverlaysResponse { Disks = { disks } });

    private static OverlayRepair Committed() => new()
    {
        Target = "vda",
        OverlayPath = Overlay,
        BasePath = "/img/web-1-vda.qcow2",
        Run = "b-1",
        Action = OverlayRepairAction.Committed,
        Reason = "committed into '/img/web-1-vda.qcow2' and deleted",
    };

    [Fact]
    public async Task Repair_DryRun_SendsTheVmAndTheFlag()
    {
        FakeCallInvoker invoker = Invoker();

        CliRun run = await CliRun.RunAsync(invoker, "backup", "repair", "kvm-01/web-1", "--dry-run");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var request = Assert.IsType<RepairOverlaysRequest>(Assert.Single(invoker.Calls).Request);
        Assert.Equal(("kvm-01/web-1", true), (request.Vm, request.DryRun));
        Assert.Contains("no backup overlay to commit", run.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Repair_CommittedAsJson_OneDiskWithItsPaths()
    {
        CliRun run = await CliRun.RunAsync(Invoker(Committed()), "backup", "repair", "kvm-01/web-1", "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal(("kvm-01/web-1", false), (json.RootElement.GetProperty("vm").GetString(), json.RootElement.GetProperty("dry_run").GetBoolean()));
        var disk = Assert.Single(json.RootElement.GetProperty("disks").EnumerateArray());
        Assert.Equal(
            ("vda", "committed", Overlay, "/img/web-1-vda.qcow2", "b-1"),
            (disk.GetProperty("target").GetString(), disk.GetProperty("action").GetString(), disk.GetProperty("overlay_path").GetString(), disk.GetProperty("base_path").GetString(), disk.GetProperty("run").GetString()));
    }

    [Fact]
    public async Task Repair_ADiskRefused_PrintsEveryDiskAndExitsFailedPrecondition()
    {
        var refused = new OverlayRepair { Target = "vdb", OverlayPath = "/img/x.orch-other.qcow2", Action = OverlayRepairAction.Refused, Reason = "no backup run of this VM recorded this overlay: not ours to commit" };

        CliRun run = await CliRun.RunAsync(Invoker(Committed(), refused), "backup", "repair", "kvm-01/web-1");

        Assert.Equal(ExitCodes.FailedPrecondition, run.ExitCode);
        Assert.Contains("refused for vdb", run.Stderr, StringComparison.Ordinal);
        var rows = run.Stdout.Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith("DISK", rows[0], StringComparison.Ordinal);
        Assert.Contains(rows, r => r.StartsWith("vda", StringComparison.Ordinal) && r.Contains("committed", StringComparison.Ordinal));
        Assert.Contains(rows, r => r.StartsWith("vdb", StringComparison.Ordinal) && r.Contains("refused", StringComparison.Ordinal) && r.Contains("not ours", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Repair_NotAVmKey_UsageErrorNothingSent()
    {
        FakeCallInvoker invoker = Invoker();

        CliRun run = await CliRun.RunAsync(invoker, "backup", "repair", "web-1");

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.Empty(invoker.Calls);
    }
}
