using System.Globalization;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Infrastructure;
using Orchestrator.Cli.Output;

namespace Orchestrator.Cli.Views;

/// <summary><c>fleet compliance</c>: every VM with its policies and RPO status. The JSON shape is documented in README.md.</summary>
internal sealed record ComplianceView(IReadOnlyList<VmComplianceView> Vms, IReadOnlyList<string> UnavailableHosts)
{
    public static ComplianceView From(GetComplianceResponse response) => new(
        [.. response.Vms.Select(VmComplianceView.From).OrderBy(v => v.Host, StringComparer.Ordinal).ThenBy(v => v.Vm, StringComparer.Ordinal)],
        [.. response.UnavailableHosts.Order(StringComparer.Ordinal)]);

    /// <summary>Present VMs whose newest backup (or checkpoint) is older than a policy's RPO, or that never had one.</summary>
    public IReadOnlyList<VmComplianceView> Violations() =>
        [.. Vms.Where(v => v.Present && v.Status is VmComplianceView.OutOfRpo or VmComplianceView.Never)];

    public static void WriteTable(ComplianceView view, TextWriter writer, bool color)
    {
        if (view.Vms.Count == 0)
        {
            writer.WriteLine("No VMs.");
            return;
        }

        // The proven-restore column only when some VM has one (test restores are optional).
        bool proven = view.Vms.Any(v => v.LastProvenRestoreAt is not null);
        TableColumn[] columns =
        [
            new("HOST"), new("VM"), new("STATUS"), new("LAST BACKUP"), new("LAST CHECKPOINT"),
            .. proven ? new TableColumn[] { new("LAST PROVEN RESTORE") } : [],
            new("POLICIES"),
        ];
        var table = new TableWriter(columns);
        foreach (VmComplianceView vm in view.Vms)
        {
            string?[] cells =
            [
                vm.Host,
                vm.Present ? vm.Vm : $"{vm.Vm} (absent)",
                vm.RtoMissed ? $"{vm.Status}, rto missed" : vm.Status,
                TextFormat.Timestamp(vm.LastBackupAt),
                TextFormat.Timestamp(vm.LastCheckpointAt),
                .. proven ? new[] { vm.LastProvenRestoreAt is null ? null : $"{TextFormat.Timestamp(vm.LastProvenRestoreAt)} (boot {vm.LastProvenBootSeconds?.ToString("0.0", CultureInfo.InvariantCulture)} s)" } : [],
                string.Join(", ", vm.Policies.Select(p => p.ToText())),
            ];
            table.AddRow(cells);
        }

        table.WriteTo(writer, color);
    }
}

internal sealed record VmComplianceView(
    string Host,
    string Vm,
    bool Present,
    string Status,
    DateTime? LastBackupAt,
    DateTime? LastCheckpointAt,
    IReadOnlyList<PolicyComplianceView> Policies,
    DateTime? LastProvenRestoreAt = null,
    double? LastProvenBootSeconds = null,
    bool RtoMissed = false)
{
    public const string OutOfRpo = "out-of-rpo";
    public const string Never = "never";

    /// <summary>Policies in the server's order (by name).</summary>
    public static VmComplianceView From(VmCompliance vm) => new(
        vm.Host,
        vm.Vm,
        vm.Present,
        EnumNames.Of(vm.Status),
        Timestamps.ToUtc(vm.LastBackupAt),
        Timestamps.ToUtc(vm.LastCheckpointAt),
        [.. vm.Policies.Select(PolicyComplianceView.From)],
        Timestamps.ToUtc(vm.LastProvenRestoreAt),
        vm.HasLastProvenBootSeconds ? Math.Round(vm.LastProvenBootSeconds, 3) : null,
        vm.RtoMissed);
}

/// <summary>One policy's view of one VM; <c>rpo</c> in seconds (0: not tracked).</summary>
internal sealed record PolicyComplianceView(string Policy, string Kind, int Version, DateTime? LastGoodAt, double Rpo, string Status, double Rto = 0, bool RtoMissed = false)
{
    public static PolicyComplianceView From(PolicyCompliance policy) => new(
        policy.Policy,
        EnumNames.Of(policy.Kind),
        policy.Version,
        Timestamps.ToUtc(policy.LastGoodAt),
        policy.Rpo is { } rpo ? rpo.ToTimeSpan().TotalSeconds : 0,
        EnumNames.Of(policy.Status),
        policy.Rto is { } rto ? rto.ToTimeSpan().TotalSeconds : 0,
        policy.RtoMissed);

    /// <summary>"nightly-web out-of-rpo (rpo 26h)", or "hourly ok" without an RPO.</summary>
    public string ToText() => (Rpo > 0
        ? $"{Policy} {Status} (rpo {DurationText.Format(TimeSpan.FromSeconds(Rpo))})"
        : $"{Policy} {Status}") + (Rto > 0 ? $" (rto {DurationText.Format(TimeSpan.FromSeconds(Rto))}{(RtoMissed ? " missed" : "")})" : "");
}

/// <summary><c>fleet overlays</c>: disks on more than one image now. The JSON shape is documented in README.md.</summary>
internal sealed record OverlaysView(IReadOnlyList<OverlayDiskView> Disks, IReadOnlyList<string> UnavailableHosts)
{
    public static OverlaysView From(ListOverlaysResponse response) => new(
        [.. response.Disks.Select(OverlayDiskView.From)
            .OrderBy(d => d.Host, StringComparer.Ordinal).ThenBy(d => d.Vm, StringComparer.Ordinal).ThenBy(d => d.Disk, StringComparer.Ordinal)],
        [.. response.UnavailableHosts.Order(StringComparer.Ordinal)]);

    public static void WriteTable(OverlaysView view, TextWriter writer, bool color)
    {
        if (view.Disks.Count == 0)
        {
            writer.WriteLine("No disks on overlays.");
            return;
        }

        var table = new TableWriter(
            new TableColumn("HOST"),
            new TableColumn("VM"),
            new TableColumn("DISK"),
            new TableColumn("DEPTH", AlignRight: true),
            new TableColumn("OVERLAY"),
            new TableColumn("ACTIVE"));
        foreach (OverlayDiskView disk in view.Disks)
        {
            table.AddRow(
                disk.Host,
                disk.Vm,
                disk.Disk,
                disk.ChainDepth.ToString(CultureInfo.InvariantCulture),
                disk.OrchestratorOverlay ? "orchestrator" : disk.ChainDepth > 1 ? "other" : null,
                disk.ActivePath);
        }

        table.WriteTo(writer, color);
    }
}

internal sealed record OverlayDiskView(string Host, string Vm, string Disk, int ChainDepth, string ActivePath, bool OrchestratorOverlay)
{
    public static OverlayDiskView From(OverlayDisk disk) =>
        new(disk.Host, disk.Vm, disk.Disk, disk.ChainDepth, disk.ActivePath, disk.OrchestratorOverlay);
}
