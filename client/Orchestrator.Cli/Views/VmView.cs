using System.Globalization;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Output;

namespace Orchestrator.Cli.Views;

/// <summary>A VM as <c>vm list</c> and <c>vm show</c> print it. The JSON shape is documented in README.md.</summary>
internal sealed record VmView(
    string Key,
    string Host,
    string Name,
    string Uuid,
    string PowerState,
    bool Present,
    int Vcpus,
    long MemoryKib,
    IReadOnlyDictionary<string, string> Labels,
    IReadOnlyList<DiskView> Disks,
    DateTime? LastSync,
    TestRestoreView? LastProvenRestore = null,
    TestRestoreView? LastTestRestore = null)
{
    public static VmView From(Vm vm) => new(
        vm.Key,
        vm.Host,
        vm.Name,
        vm.Uuid,
        EnumNames.Of(vm.PowerState),
        vm.Present,
        vm.Vcpus,
        vm.MemoryKib,
        new SortedDictionary<string, string>(vm.Labels, StringComparer.Ordinal),
        [.. vm.Disks.Select(DiskView.From)],
        Timestamps.ToUtc(vm.LastSync),
        TestRestoreView.From(vm.LastProvenRestore),
        TestRestoreView.From(vm.LastTestRestore));

    /// <summary>VMs sorted by host, then name, so output is stable whatever order the server answers in.</summary>
    public static IReadOnlyList<VmView> FromList(IEnumerable<Vm> vms) =>
        [.. vms.Select(From).OrderBy(v => v.Host, StringComparer.Ordinal).ThenBy(v => v.Name, StringComparer.Ordinal)];

    public static void WriteTable(IReadOnlyList<VmView> vms, TextWriter writer, bool color)
    {
        if (vms.Count == 0)
        {
            writer.WriteLine("No VMs.");
            return;
        }

        var table = new TableWriter(
            new TableColumn("HOST"),
            new TableColumn("NAME"),
            new TableColumn("STATE"),
            new TableColumn("VCPUS", AlignRight: true),
            new TableColumn("MEMORY", AlignRight: true),
            new TableColumn("DISKS"),
            new TableColumn("LABELS"));
        foreach (VmView vm in vms)
        {
            table.AddRow(
                vm.Host,
                vm.Name,
                StateText(vm),
                vm.Vcpus.ToString(CultureInfo.InvariantCulture),
                TextFormat.Kib(vm.MemoryKib),
                string.Join(",", vm.Disks.Select(d => d.Target)),
                FormatLabels(vm.Labels));
        }

        table.WriteTo(writer, color);
    }

    public static void WriteDetails(VmView vm, TextWriter writer, bool color)
    {
        new PropertyListWriter()
            .Add("Key", vm.Key)
            .Add("Host", vm.Host)
            .Add("Name", vm.Name)
            .Add("UUID", vm.Uuid)
            .Add("State", StateText(vm))
            .Add("vCPUs", vm.Vcpus.ToString(CultureInfo.InvariantCulture))
            .Add("Memory", TextFormat.Kib(vm.MemoryKib))
            .Add("Labels", FormatLabels(vm.Labels))
            .Add("Last sync", TextFormat.Timestamp(vm.LastSync))
            .AddIf("Proven", vm.LastProvenRestore is { } proven
                ? $"restore of {proven.Key} at {TextFormat.Timestamp(proven.EndedAt)}, booted in {proven.BootSeconds.ToString("0.0", CultureInfo.InvariantCulture)} s ({proven.Probe})"
                : null)
            .AddIf("Last test", vm.LastTestRestore is { } last ? $"{last.Outcome}: {last.Reason}" : null)
            .WriteTo(writer, color);
        writer.WriteLine();
        if (vm.Disks.Count == 0)
        {
            writer.WriteLine("No disks.");
            return;
        }

        var disks = new TableWriter(
            new TableColumn("DISK"),
            new TableColumn("FORMAT"),
            new TableColumn("CHAIN", AlignRight: true),
            new TableColumn("SOURCE"));
        foreach (DiskView disk in vm.Disks)
        {
            disks.AddRow(disk.Target, disk.Format, disk.ChainDepth.ToString(CultureInfo.InvariantCulture), disk.SourcePath);
        }

        disks.WriteTo(writer, color);
    }

    /// <summary>The state for people: the power state, or "absent" when the VM vanished from its host.</summary>
    private static string StateText(VmView vm) => vm.Present ? vm.PowerState : "absent";

    private static string FormatLabels(IReadOnlyDictionary<string, string> labels) =>
        string.Join(",", labels.Select(pair => $"{pair.Key}={pair.Value}"));
}
