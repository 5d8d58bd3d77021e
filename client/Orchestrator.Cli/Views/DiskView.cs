using Orchestrator.Api.V1;

namespace Orchestrator.Cli.Views;

/// <summary>A disk of a VM, inside <see cref="VmView"/>.</summary>
internal sealed record DiskView(string Target, string SourcePath, string Format, int ChainDepth)
{
    public static DiskView From(Disk disk) => new(disk.Target, disk.SourcePath, disk.Format, disk.ChainDepth);
}
