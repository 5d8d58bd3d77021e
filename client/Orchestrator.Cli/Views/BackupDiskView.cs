using Orchestrator.Api.V1;

namespace Orchestrator.Cli.Views;

/// <summary>A disk of a backup run, inside <see cref="BackupRunView"/>.</summary>
internal sealed record BackupDiskView(
    string Target,
    string BasePath,
    string Format,
    string OverlayPath,
    string BackupPath,
    long BytesTotal,
    long BytesCopied,
    string? Sha256,
    bool Committed,
    bool Verified)
{
    public static BackupDiskView From(BackupDisk disk) => new(
        disk.Target,
        disk.BasePath,
        disk.Format,
        disk.OverlayPath,
        disk.BackupPath,
        disk.BytesTotal,
        disk.BytesCopied,
        disk.Sha256.Length == 0 ? null : disk.Sha256,
        disk.Committed,
        disk.Verified);
}
