using Orchestrator.Api.V1;
using Orchestrator.Cli.Output;

namespace Orchestrator.Cli.Views;

/// <summary>What <c>backup repair</c> did (or would do) for one VM. The JSON shape is documented in README.md.</summary>
internal sealed record OverlayRepairView(string Vm, bool DryRun, IReadOnlyList<OverlayRepairDiskView> Disks)
{
    public static OverlayRepairView From(string vm, bool dryRun, RepairOverlaysResponse response) =>
        new(vm, dryRun, [.. response.Disks.Select(OverlayRepairDiskView.From)]);

    public static void WriteDetails(OverlayRepairView view, TextWriter writer, bool color)
    {
        if (view.Disks.Count == 0)
        {
            writer.WriteLine($"{view.Vm} runs on its own images: no backup overlay to commit.");
            return;
        }

        var table = new TableWriter(new TableColumn("DISK"), new TableColumn("ACTION"), new TableColumn("OVERLAY"), new TableColumn("BASE"), new TableColumn("RUN"), new TableColumn("REASON"));
        foreach (OverlayRepairDiskView disk in view.Disks)
        {
            table.AddRow(disk.Target, disk.Action, disk.OverlayPath, disk.BasePath ?? "-", disk.Run ?? "-", disk.Reason);
        }

        table.WriteTo(writer, color);
    }
}

internal sealed record OverlayRepairDiskView(string Target, string Action, string OverlayPath, string? BasePath, string? Run, string Reason)
{
    public static OverlayRepairDiskView From(OverlayRepair repair) => new(
        repair.Target,
        EnumNames.Of(repair.Action),
        repair.OverlayPath,
        repair.BasePath.Length == 0 ? null : repair.BasePath,
        repair.Run.Length == 0 ? null : repair.Run,
        repair.Reason);
}
