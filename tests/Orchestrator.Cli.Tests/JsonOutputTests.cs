using System.Text.Json;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Output;
using Orchestrator.Cli.Tests.Fakes;
using Orchestrator.Cli.Views;

namespace Orchestrator.Cli.Tests;

/// <summary>
/// The JSON documents are a contract with scripts (README.md): these tests pin field names, order,
/// types and value spellings. Changing one of them is a breaking change.
/// </summary>
public sealed class JsonOutputTests
{
    private static JsonElement Serialize<T>(T value, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> typeInfo)
    {
        var writer = new StringWriter();
        JsonOutput.Write(writer, value, typeInfo);
        return JsonDocument.Parse(writer.ToString()).RootElement.Clone();
    }

    private static string[] PropertyNames(JsonElement element) => [.. element.EnumerateObject().Select(p => p.Name)];

    [Fact]
    public void HostList_IsAnArrayOfHostsSortedByName_WithDocumentedFields()
    {
        IReadOnlyList<HostView> hosts = HostView.FromList([Samples.OfflineHost(), Samples.OnlineHost()]);

        JsonElement json = Serialize(hosts, CliJsonContext.Output.IReadOnlyListHostView);

        Assert.Equal(JsonValueKind.Array, json.ValueKind);
        Assert.Equal(2, json.GetArrayLength());
        JsonElement online = json[0];
        Assert.Equal(
            ["name", "uri", "online", "silo", "driver", "libvirt_version", "hypervisor_version", "vm_count", "last_sync", "last_sync_error"],
            PropertyNames(online));
        Assert.Equal("kvm-01", online.GetProperty("name").GetString());
        Assert.Equal("qemu:///system", online.GetProperty("uri").GetString());
        Assert.True(online.GetProperty("online").GetBoolean());
        Assert.Equal("10.0.0.1:11111", online.GetProperty("silo").GetString());
        Assert.Equal("libvirt", online.GetProperty("driver").GetString());
        Assert.Equal("10.0.0", online.GetProperty("libvirt_version").GetString());
        Assert.Equal("8.2.2", online.GetProperty("hypervisor_version").GetString());
        Assert.Equal(2, online.GetProperty("vm_count").GetInt32());
        Assert.Equal("2025-01-31T22:04:05Z", online.GetProperty("last_sync").GetString());
        Assert.Equal(JsonValueKind.Null, online.GetProperty("last_sync_error").ValueKind);
    }

    [Fact]
    public void HostList_OfflineHost_HasNullsForWhatTheServerDidNotSend()
    {
        JsonElement offline = Serialize(HostView.FromList([Samples.OfflineHost()]), CliJsonContext.Output.IReadOnlyListHostView)[0];

        Assert.False(offline.GetProperty("online").GetBoolean());
        Assert.Equal(JsonValueKind.Null, offline.GetProperty("silo").ValueKind);
        Assert.Equal(JsonValueKind.Null, offline.GetProperty("libvirt_version").ValueKind);
        Assert.Equal(JsonValueKind.Null, offline.GetProperty("last_sync").ValueKind);
        Assert.Equal("connection reset by peer", offline.GetProperty("last_sync_error").GetString());
    }

    [Fact]
    public void Vm_IsAnObjectWithDocumentedFieldsTypesAndSpellings()
    {
        JsonElement vm = Serialize(VmView.From(Samples.RunningVm()), CliJsonContext.Output.VmView);

        Assert.Equal(JsonValueKind.Object, vm.ValueKind);
        Assert.Equal(
            ["key", "host", "name", "uuid", "power_state", "present", "vcpus", "memory_kib", "labels", "disks", "last_sync", "last_proven_restore", "last_test_restore"],
            PropertyNames(vm));
        Assert.Equal("kvm-01/web-1", vm.GetProperty("key").GetString());
        Assert.Equal("kvm-01", vm.GetProperty("host").GetString());
        Assert.Equal("web-1", vm.GetProperty("name").GetString());
        Assert.Equal("6f1c0a0e-5a7b-4b8e-9d3c-2b1f0e9a7c11", vm.GetProperty("uuid").GetString());
        Assert.Equal("running", vm.GetProperty("power_state").GetString());
        Assert.True(vm.GetProperty("present").GetBoolean());
        Assert.Equal(4, vm.GetProperty("vcpus").GetInt32());
        Assert.Equal(4L * 1024 * 1024, vm.GetProperty("memory_kib").GetInt64());
        Assert.Equal("2025-01-31T22:04:05Z", vm.GetProperty("last_sync").GetString());
    }

    [Fact]
    public void Vm_LabelsAreAnObjectSortedByKey_KeysNotRenamed()
    {
        var sample = Samples.RunningVm();
        sample.Labels["Backup_Tier"] = "gold";

        JsonElement labels = Serialize(VmView.From(sample), CliJsonContext.Output.VmView).GetProperty("labels");

        Assert.Equal(JsonValueKind.Object, labels.ValueKind);
        Assert.Equal(["Backup_Tier", "env", "tier"], PropertyNames(labels));
        Assert.Equal("prod", labels.GetProperty("env").GetString());
    }

    [Fact]
    public void Vm_DisksAreAnArrayInServerOrder_WithDocumentedFields()
    {
        JsonElement disks = Serialize(VmView.From(Samples.RunningVm()), CliJsonContext.Output.VmView).GetProperty("disks");

        Assert.Equal(2, disks.GetArrayLength());
        Assert.Equal(["target", "source_path", "format", "chain_depth"], PropertyNames(disks[0]));
        Assert.Equal("vda", disks[0].GetProperty("target").GetString());
        Assert.Equal("/var/lib/libvirt/images/web-1.qcow2", disks[0].GetProperty("source_path").GetString());
        Assert.Equal("qcow2", disks[0].GetProperty("format").GetString());
        Assert.Equal(2, disks[0].GetProperty("chain_depth").GetInt32());
        Assert.Equal("raw", disks[1].GetProperty("format").GetString());
    }

    [Fact]
    public void Vm_ShutOffWithoutSyncTime_HasSnakeCaseStateAndNullTimestamp()
    {
        JsonElement vm = Serialize(VmView.From(Samples.ShutOffVm()), CliJsonContext.Output.VmView);

        Assert.Equal("shut_off", vm.GetProperty("power_state").GetString());
        Assert.Equal(JsonValueKind.Null, vm.GetProperty("last_sync").ValueKind);
        Assert.Equal(0, vm.GetProperty("disks").GetArrayLength());
        Assert.Empty(PropertyNames(vm.GetProperty("labels")));
    }

    [Fact]
    public void VmList_IsAnArraySortedByHostThenName()
    {
        IReadOnlyList<VmView> vms = VmView.FromList(
            [Samples.VmOn("kvm-02", "a"), Samples.VmOn("kvm-01", "b"), Samples.VmOn("kvm-01", "a")]);

        JsonElement json = Serialize(vms, CliJsonContext.Output.IReadOnlyListVmView);

        Assert.Equal(JsonValueKind.Array, json.ValueKind);
        Assert.Equal(
            ["kvm-01/a", "kvm-01/b", "kvm-02/a"],
            json.EnumerateArray().Select(vm => vm.GetProperty("key").GetString()!).ToArray());
    }

    [Fact]
    public void Chain_IsAnObjectWithLayersActiveFirst()
    {
        JsonElement chain = Serialize(DiskChainView.From(Samples.Chain()), CliJsonContext.Output.DiskChainView);

        Assert.Equal(["key", "host", "vm", "target", "layers", "last_reconciled"], PropertyNames(chain));
        Assert.Equal("kvm-01/web-1/vda", chain.GetProperty("key").GetString());
        Assert.Equal("kvm-01", chain.GetProperty("host").GetString());
        Assert.Equal("web-1", chain.GetProperty("vm").GetString());
        Assert.Equal("vda", chain.GetProperty("target").GetString());
        Assert.Equal("2025-01-31T22:04:05Z", chain.GetProperty("last_reconciled").GetString());
        JsonElement layers = chain.GetProperty("layers");
        Assert.Equal(["depth", "path", "format"], PropertyNames(layers[0]));
        Assert.Equal(0, layers[0].GetProperty("depth").GetInt32());
        Assert.Equal("/var/lib/libvirt/images/web-1.orch-r42.qcow2", layers[0].GetProperty("path").GetString());
        Assert.Equal(1, layers[1].GetProperty("depth").GetInt32());
        Assert.Equal("qcow2", layers[1].GetProperty("format").GetString());
    }

    [Fact]
    public void Write_PathWithPlusSign_IsNotEscaped()
    {
        var writer = new StringWriter();

        JsonOutput.Write(writer, VmView.From(Samples.RunningVm()), CliJsonContext.Output.VmView);

        Assert.Contains("web+1-data.raw", writer.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Write_EndsWithOneNewline()
    {
        var writer = new StringWriter();

        JsonOutput.Write(writer, HostView.FromList([]), CliJsonContext.Output.IReadOnlyListHostView);

        Assert.Equal("[]" + Environment.NewLine, writer.ToString());
    }

    public static TheoryData<PowerState> PowerStates => [.. Enum.GetValues<PowerState>()];

    [Theory]
    [MemberData(nameof(PowerStates))]
    public void EnumNames_EveryKnownPowerState_IsTheLowercaseProtoNameWithoutPrefix(PowerState state)
    {
        string protoName = typeof(PowerState).GetField(state.ToString())!
            .GetCustomAttributes(typeof(Google.Protobuf.Reflection.OriginalNameAttribute), false)
            .Cast<Google.Protobuf.Reflection.OriginalNameAttribute>().Single().Name;

        Assert.Equal(protoName["POWER_STATE_".Length..].ToLowerInvariant(), EnumNames.Of(state));
    }

    [Fact]
    public void EnumNames_PowerStateFromANewerServer_IsUnknown()
    {
        Assert.Equal("unknown", EnumNames.Of((PowerState)99));
    }
}
