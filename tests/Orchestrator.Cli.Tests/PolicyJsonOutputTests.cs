using System.Text.Json;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Output;
using Orchestrator.Cli.Tests.Fakes;
using Orchestrator.Cli.Views;

namespace Orchestrator.Cli.Tests;

/// <summary>
/// The JSON of the policy and fleet commands is a contract with scripts (README.md): these tests pin field names,
/// order, types and value spellings. Changing one of them is a breaking change.
/// </summary>
public sealed class PolicyJsonOutputTests
{
    private static JsonElement Serialize<T>(T value, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> typeInfo)
    {
        var writer = new StringWriter();
        JsonOutput.Write(writer, value, typeInfo);
        return JsonDocument.Parse(writer.ToString()).RootElement.Clone();
    }

    private static string[] PropertyNames(JsonElement element) => [.. element.EnumerateObject().Select(p => p.Name)];

    [Fact]
    public void Run_HasTheDocumentedFieldsTypesAndSpellings()
    {
        PolicyRun source = PolicySamples.PartialRun();
        source.Trigger = PolicyRunTrigger.Retry;
        source.RetryOf = "p-20261125-020000-aaaaaa";

        JsonElement run = Serialize(PolicyRunView.From(source), CliJsonContext.Output.PolicyRunView);

        Assert.Equal(
            ["run_id", "policy", "policy_version", "kind", "trigger", "retry_of", "state", "started_at", "ended_at", "trace_id", "concurrency", "error", "targets"],
            PropertyNames(run));
        Assert.Equal(PolicySamples.RunId, run.GetProperty("run_id").GetString());
        Assert.Equal("nightly-web", run.GetProperty("policy").GetString());
        Assert.Equal(3, run.GetProperty("policy_version").GetInt32());
        Assert.Equal("live-backup", run.GetProperty("kind").GetString());
        Assert.Equal("retry", run.GetProperty("trigger").GetString());
        Assert.Equal("p-20261125-020000-aaaaaa", run.GetProperty("retry_of").GetString());
        Assert.Equal("partial", run.GetProperty("state").GetString());
        Assert.Equal("2026-11-26T02:00:00Z", run.GetProperty("started_at").GetString());
        Assert.Equal("2026-11-26T02:01:35Z", run.GetProperty("ended_at").GetString());
        Assert.Equal("4bf92f3577b34da6a3ce929d0e0e4736", run.GetProperty("trace_id").GetString());
        Assert.Equal("{\"per_host\":1,\"fleet\":4}", JsonSerializer.Serialize(run.GetProperty("concurrency")));
        Assert.Equal(JsonValueKind.Null, run.GetProperty("error").ValueKind);
    }

    [Fact]
    public void Run_TargetsSortedByHostAndVm_WithTheDocumentedFields()
    {
        JsonElement targets = Serialize(PolicyRunView.From(PolicySamples.PartialRun()), CliJsonContext.Output.PolicyRunView).GetProperty("targets");

        Assert.Equal(["web-1", "web-2", "web-3"], targets.EnumerateArray().Select(t => t.GetProperty("vm").GetString()));
        JsonElement done = targets[0];
        Assert.Equal(
            ["host", "vm", "status", "backup_run", "checkpoint", "reason", "admitted_at", "released_at", "attempts"],
            PropertyNames(done));
        Assert.Equal("kvm-01", done.GetProperty("host").GetString());
        Assert.Equal("succeeded", done.GetProperty("status").GetString());
        Assert.Equal("kvm-01/web-1/b-20261126-020001-0a0b0c", done.GetProperty("backup_run").GetString());
        Assert.Equal(JsonValueKind.Null, done.GetProperty("checkpoint").ValueKind);
        Assert.Equal(JsonValueKind.Null, done.GetProperty("reason").ValueKind);
        Assert.Equal("2026-11-26T02:00:01Z", done.GetProperty("admitted_at").GetString());
        Assert.Equal("2026-11-26T02:00:42Z", done.GetProperty("released_at").GetString());
        Assert.Equal(1, done.GetProperty("attempts").GetInt32());
        JsonElement skipped = targets[2];
        Assert.Equal("skipped", skipped.GetProperty("status").GetString());
        Assert.Equal("host unavailable: no live silo serves host 'kvm-03'", skipped.GetProperty("reason").GetString());
        Assert.Equal(JsonValueKind.Null, skipped.GetProperty("admitted_at").ValueKind);
        Assert.Equal(0, skipped.GetProperty("attempts").GetInt32());
    }

    [Theory]
    [InlineData(PolicyRunState.Running, "running")]
    [InlineData(PolicyRunState.Completed, "completed")]
    [InlineData(PolicyRunState.Failed, "failed")]
    [InlineData(PolicyRunState.Unspecified, "unspecified")]
    [InlineData((PolicyRunState)99, "unknown")]
    public void Run_StateSpellings(PolicyRunState state, string expected)
    {
        PolicyRun source = PolicySamples.RunningRun();
        source.State = state;

        Assert.Equal(expected, Serialize(PolicyRunView.From(source), CliJsonContext.Output.PolicyRunView).GetProperty("state").GetString());
    }

    [Theory]
    [InlineData(PolicyTargetStatus.Pending, "pending")]
    [InlineData(PolicyTargetStatus.Running, "running")]
    [InlineData(PolicyTargetStatus.Failed, "failed")]
    public void Target_StatusSpellings(PolicyTargetStatus status, string expected)
    {
        PolicyRun source = PolicySamples.RunningRun();
        source.Targets[0].Status = status;

        JsonElement run = Serialize(PolicyRunView.From(source), CliJsonContext.Output.PolicyRunView);

        Assert.Equal(expected, run.GetProperty("targets")[2].GetProperty("status").GetString());
    }

    [Fact]
    public void Policy_HasTheDocumentedFields_SpecWithTheKeysOfAPolicyFile()
    {
        JsonElement policy = Serialize(PolicyView.From(PolicySamples.Nightly()), CliJsonContext.Output.PolicyView);

        Assert.Equal(["name", "version", "spec", "created_at", "updated_at", "next_run_at", "last_run", "pending_retries"], PropertyNames(policy));
        Assert.Equal("nightly-web", policy.GetProperty("name").GetString());
        Assert.Equal(3, policy.GetProperty("version").GetInt32());
        Assert.Equal("2026-11-27T02:00:00Z", policy.GetProperty("next_run_at").GetString());
        Assert.Equal("partial", policy.GetProperty("last_run").GetProperty("state").GetString());
        Assert.Equal(["kvm-03/web-3"], policy.GetProperty("pending_retries").EnumerateArray().Select(e => e.GetString()));
        JsonElement spec = policy.GetProperty("spec");
        Assert.Equal(
            ["name", "kind", "description", "selector", "schedule", "retention", "target", "quiesce", "verify", "bandwidth", "concurrency", "rpo", "test_restore", "level", "full_every"],
            PropertyNames(spec));
        Assert.Equal("{\"hosts\":[\"kvm-*\"],\"vms\":[\"web-*\",\"db-1\"],\"labels\":{\"backup\":\"*\",\"tier\":\"web\"}}", JsonSerializer.Serialize(spec.GetProperty("selector")));
        Assert.Equal("{\"cron\":\"0 2 * * *\",\"time_zone\":\"Europe/Berlin\"}", JsonSerializer.Serialize(spec.GetProperty("schedule")));
        Assert.Equal("{\"keep_last\":7,\"hourly\":0,\"daily\":7,\"weekly\":4,\"monthly\":6}", JsonSerializer.Serialize(spec.GetProperty("retention")));
        Assert.Equal("try", spec.GetProperty("quiesce").GetString());
        Assert.True(spec.GetProperty("verify").GetBoolean());
        Assert.Equal(104857600, spec.GetProperty("bandwidth").GetInt64());
        Assert.Equal(93600, spec.GetProperty("rpo").GetDouble());
    }

    [Fact]
    public void Policy_WithoutScheduleTargetOrRuns_HasNulls()
    {
        JsonElement policy = Serialize(PolicyView.From(PolicySamples.Checkpoints()), CliJsonContext.Output.PolicyView);

        Assert.Equal(JsonValueKind.Null, policy.GetProperty("next_run_at").ValueKind);
        Assert.Equal(JsonValueKind.Null, policy.GetProperty("last_run").ValueKind);
        Assert.Equal(0, policy.GetProperty("pending_retries").GetArrayLength());
        JsonElement spec = policy.GetProperty("spec");
        Assert.Equal("checkpoint", spec.GetProperty("kind").GetString());
        Assert.Equal(JsonValueKind.Null, spec.GetProperty("description").ValueKind);
        Assert.Equal(JsonValueKind.Null, spec.GetProperty("schedule").ValueKind);
        Assert.Equal(JsonValueKind.Null, spec.GetProperty("target").ValueKind);
        Assert.Equal("off", spec.GetProperty("quiesce").GetString());
        Assert.Equal(0, spec.GetProperty("rpo").GetDouble());
    }

    [Fact]
    public void Compliance_HasTheDocumentedFields_RpoInSeconds()
    {
        JsonElement compliance = Serialize(ComplianceView.From(PolicySamples.Compliance()), CliJsonContext.Output.ComplianceView);

        JsonElement vm = compliance.GetProperty("vms")[1];
        Assert.Equal(["host", "vm", "present", "status", "last_backup_at", "last_checkpoint_at", "policies", "last_proven_restore_at", "last_proven_boot_seconds", "rto_missed"], PropertyNames(vm));
        Assert.Equal("kvm-01", vm.GetProperty("host").GetString());
        Assert.Equal("web-1", vm.GetProperty("vm").GetString());
        Assert.True(vm.GetProperty("present").GetBoolean());
        Assert.Equal("out-of-rpo", vm.GetProperty("status").GetString());
        Assert.Equal("2026-11-23T02:00:00Z", vm.GetProperty("last_backup_at").GetString());
        Assert.Equal(JsonValueKind.Null, vm.GetProperty("last_checkpoint_at").ValueKind);
        JsonElement policy = Assert.Single(vm.GetProperty("policies").EnumerateArray());
        Assert.Equal(["policy", "kind", "version", "last_good_at", "rpo", "status", "rto", "rto_missed"], PropertyNames(policy));
        Assert.Equal("nightly-web", policy.GetProperty("policy").GetString());
        Assert.Equal("live-backup", policy.GetProperty("kind").GetString());
        Assert.Equal(3, policy.GetProperty("version").GetInt32());
        Assert.Equal("2026-11-23T02:00:00Z", policy.GetProperty("last_good_at").GetString());
        Assert.Equal(93600, policy.GetProperty("rpo").GetDouble());
        Assert.Equal("out-of-rpo", policy.GetProperty("status").GetString());
        Assert.Equal("unprotected", compliance.GetProperty("vms")[0].GetProperty("status").GetString());
        Assert.Equal(0, compliance.GetProperty("vms")[0].GetProperty("policies").GetArrayLength());
    }

    [Theory]
    [InlineData(ComplianceStatus.Ok, "ok")]
    [InlineData(ComplianceStatus.OutOfRpo, "out-of-rpo")]
    [InlineData(ComplianceStatus.Never, "never")]
    [InlineData(ComplianceStatus.Unprotected, "unprotected")]
    public void Compliance_StatusSpellings(ComplianceStatus status, string expected)
    {
        GetComplianceResponse response = PolicySamples.Compliance();
        response.Vms[0].Status = status;

        JsonElement compliance = Serialize(ComplianceView.From(response), CliJsonContext.Output.ComplianceView);

        Assert.Equal(expected, compliance.GetProperty("vms")[2].GetProperty("status").GetString());
    }

    [Fact]
    public void Overlays_HasTheDocumentedFields()
    {
        JsonElement overlays = Serialize(OverlaysView.From(PolicySamples.Overlays()), CliJsonContext.Output.OverlaysView);

        JsonElement disk = overlays.GetProperty("disks")[0];
        Assert.Equal(["host", "vm", "disk", "chain_depth", "active_path", "orchestrator_overlay"], PropertyNames(disk));
        Assert.Equal("kvm-01", disk.GetProperty("host").GetString());
        Assert.Equal("web-1", disk.GetProperty("vm").GetString());
        Assert.Equal("vda", disk.GetProperty("disk").GetString());
        Assert.Equal(2, disk.GetProperty("chain_depth").GetInt32());
        Assert.Equal("/var/lib/libvirt/images/web-1.vda.orch-b-20261126-020001-0a0b0c.qcow2", disk.GetProperty("active_path").GetString());
        Assert.True(disk.GetProperty("orchestrator_overlay").GetBoolean());
        Assert.False(overlays.GetProperty("disks")[1].GetProperty("orchestrator_overlay").GetBoolean());
        Assert.Equal(["kvm-03"], overlays.GetProperty("unavailable_hosts").EnumerateArray().Select(h => h.GetString()));
    }

    [Fact]
    public void CheckpointOrigin_Policy_IsSpelledPolicy()
    {
        Assert.Equal("policy", EnumNames.Of(CheckpointOrigin.Policy));
    }
}
