using System.Text.Json;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Tests.Fakes;

namespace Orchestrator.Cli.Tests;

/// <summary><c>fleet compliance</c> and <c>fleet overlays</c> against a fake call invoker.</summary>
public sealed class FleetCommandTests
{
    private static readonly string NL = Environment.NewLine;

    private static string[] Lines(string text) => text.Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);

    private static FakeCallInvoker Compliance(GetComplianceResponse response) =>
        new FakeCallInvoker().On<GetComplianceRequest, GetComplianceResponse>("GetCompliance", _ => response);

    private static FakeCallInvoker Overlays(ListOverlaysResponse response) =>
        new FakeCallInvoker().On<ListOverlaysRequest, ListOverlaysResponse>("ListOverlays", _ => response);

    [Fact]
    public async Task ComplianceTable_SortedByHostAndVm_WarnsAboutTheDownHost_ExitsOkThoughAVmIsOutOfRpo()
    {
        FakeCallInvoker invoker = Compliance(PolicySamples.Compliance());

        CliRun run = await CliRun.RunAsync(invoker, "fleet", "compliance");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var request = Assert.IsType<GetComplianceRequest>(Assert.Single(invoker.Calls).Request);
        Assert.Equal(new GetComplianceRequest(), request);
        Assert.Equal(
            [
                "HOST    VM     STATUS       LAST BACKUP           LAST CHECKPOINT  POLICIES",
                "kvm-01  db-1   unprotected  -                     -                -",
                "kvm-01  web-1  out-of-rpo   2026-11-23T02:00:00Z  -                nightly-web out-of-rpo (rpo 26h)",
                "kvm-02  web-2  ok           2026-11-26T02:00:00Z  -                nightly-web ok (rpo 26h)",
            ],
            Lines(run.Stdout));
        Assert.Equal($"warning: host kvm-03 is unavailable (its silo is down); its VMs are shown as last seen{NL}", run.Stderr);
    }

    [Fact]
    public async Task Compliance_Filters_AreSent()
    {
        FakeCallInvoker invoker = Compliance(new GetComplianceResponse());

        CliRun run = await CliRun.RunAsync(invoker, "fleet", "compliance", "--host", "kvm-01", "--policy", "nightly-web", "--status", "out-of-rpo");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal(
            new GetComplianceRequest { Host = "kvm-01", Policy = "nightly-web", Status = ComplianceStatus.OutOfRpo },
            Assert.Single(invoker.Calls).Request);
        Assert.Equal($"No VMs.{NL}", run.Stdout);
    }

    [Theory]
    [InlineData("ok", ComplianceStatus.Ok)]
    [InlineData("never", ComplianceStatus.Never)]
    [InlineData("unprotected", ComplianceStatus.Unprotected)]
    public async Task Compliance_EachStatus_IsSentAsItsEnum(string status, ComplianceStatus expected)
    {
        FakeCallInvoker invoker = Compliance(new GetComplianceResponse());

        await CliRun.RunAsync(invoker, "fleet", "compliance", "--status", status);

        Assert.Equal(expected, Assert.IsType<GetComplianceRequest>(Assert.Single(invoker.Calls).Request).Status);
    }

    [Fact]
    public async Task Compliance_UnknownStatus_IsAUsageError()
    {
        CliRun run = await CliRun.RunAsync(new FakeCallInvoker(), "fleet", "compliance", "--status", "late");

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.Contains("late", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Compliance_MalformedPolicyName_IsAUsageErrorNamingTheOption()
    {
        CliRun run = await CliRun.RunAsync(new FakeCallInvoker(), "fleet", "compliance", "--policy", "Nightly");

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.StartsWith("error: --policy: 'Nightly' is not a policy name", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ComplianceJson_VmsAndUnavailableHosts()
    {
        CliRun run = await CliRun.RunAsync(Compliance(PolicySamples.Compliance()), "fleet", "compliance", "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal(["vms", "unavailable_hosts"], json.RootElement.EnumerateObject().Select(p => p.Name));
        Assert.Equal(["db-1", "web-1", "web-2"], json.RootElement.GetProperty("vms").EnumerateArray().Select(v => v.GetProperty("vm").GetString()));
        Assert.Equal(["kvm-03"], json.RootElement.GetProperty("unavailable_hosts").EnumerateArray().Select(h => h.GetString()));
    }

    [Fact]
    public async Task Compliance_FailOnViolation_VmOutOfRpo_PrintsTheListThenExitsFailedPrecondition()
    {
        CliRun run = await CliRun.RunAsync(Compliance(PolicySamples.Compliance()), "fleet", "compliance", "--fail-on-violation", "--format", "json");

        Assert.Equal(ExitCodes.FailedPrecondition, run.ExitCode);
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal(3, json.RootElement.GetProperty("vms").GetArrayLength());
        Assert.EndsWith($"error: 1 VM(s) out of policy: kvm-01/web-1 (out-of-rpo){NL}", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Compliance_FailOnViolation_NeverBackedUp_Counts()
    {
        GetComplianceResponse response = PolicySamples.Compliance();
        response.Vms[0].Status = ComplianceStatus.Never;

        CliRun run = await CliRun.RunAsync(Compliance(response), "fleet", "compliance", "--fail-on-violation");

        Assert.Equal(ExitCodes.FailedPrecondition, run.ExitCode);
        Assert.Contains("2 VM(s) out of policy: kvm-01/web-1 (out-of-rpo), kvm-02/web-2 (never)", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Compliance_FailOnViolation_OnlyOkAndUnprotected_ExitsOk()
    {
        GetComplianceResponse response = PolicySamples.Compliance();
        response.Vms[1].Status = ComplianceStatus.Ok;

        CliRun run = await CliRun.RunAsync(Compliance(response), "fleet", "compliance", "--fail-on-violation");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
    }

    [Fact]
    public async Task Compliance_FailOnViolation_AbsentVmOutOfRpo_DoesNotCount()
    {
        GetComplianceResponse response = PolicySamples.Compliance();
        response.Vms[1].Present = false;

        CliRun run = await CliRun.RunAsync(Compliance(response), "fleet", "compliance", "--fail-on-violation");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Contains("kvm-01  web-1 (absent)  out-of-rpo", run.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task OverlaysTable_SortedWithDepthKindAndActiveImage_WarnsAboutTheDownHost()
    {
        FakeCallInvoker invoker = Overlays(PolicySamples.Overlays());

        CliRun run = await CliRun.RunAsync(invoker, "fleet", "overlays");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal(new ListOverlaysRequest(), Assert.Single(invoker.Calls).Request);
        Assert.Equal(
            [
                "HOST    VM     DISK  DEPTH  OVERLAY       ACTIVE",
                "kvm-01  web-1  vda       2  orchestrator  /var/lib/libvirt/images/web-1.vda.orch-b-20261126-020001-0a0b0c.qcow2",
                "kvm-02  db-1   vda       3  other         /var/lib/libvirt/images/db-1.snap2.qcow2",
            ],
            Lines(run.Stdout));
        Assert.Equal($"warning: host kvm-03 is unavailable (its silo is down); its disks are not listed{NL}", run.Stderr);
    }

    [Fact]
    public async Task Overlays_Options_AreSent()
    {
        FakeCallInvoker invoker = Overlays(new ListOverlaysResponse());

        CliRun run = await CliRun.RunAsync(invoker, "fleet", "overlays", "--all", "--refresh", "--host", "kvm-02");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal(new ListOverlaysRequest { Host = "kvm-02", All = true, Refresh = true }, Assert.Single(invoker.Calls).Request);
        Assert.Equal($"No disks on overlays.{NL}", run.Stdout);
    }

    [Fact]
    public async Task Overlays_TheOneHostAskedForIsDown_ExitsUnavailable()
    {
        FakeCallInvoker invoker = Overlays(new ListOverlaysResponse { UnavailableHosts = { "kvm-03" } });

        CliRun run = await CliRun.RunAsync(invoker, "fleet", "overlays", "--host", "kvm-03");

        Assert.Equal(ExitCodes.Unavailable, run.ExitCode);
        Assert.Empty(run.Stdout);
    }

    [Fact]
    public async Task OverlaysJson_DisksAndUnavailableHosts()
    {
        CliRun run = await CliRun.RunAsync(Overlays(PolicySamples.Overlays()), "fleet", "overlays", "--format", "json");

        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal(["disks", "unavailable_hosts"], json.RootElement.EnumerateObject().Select(p => p.Name));
        Assert.Equal(["web-1", "db-1"], json.RootElement.GetProperty("disks").EnumerateArray().Select(d => d.GetProperty("vm").GetString()));
    }
}
