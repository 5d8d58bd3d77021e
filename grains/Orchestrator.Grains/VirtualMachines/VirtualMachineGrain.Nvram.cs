using System.Security.Cryptography;
using Orchestrator.Grains.Backups;
using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.VirtualMachines;

internal sealed partial class VirtualMachineGrain
{
    /// <summary>An NVRAM file is small (a few MiB at most); refuse to copy anything bigger as one.</summary>
    private const long MaxNvramBytes = 64L << 20;

    /// <summary>
    /// Copies the VM's NVRAM file (UEFI variables) into the set as raw <see cref="BackupSetManifest.NvramFileName"/>
    /// (private, written atomically, never through a link) and returns its manifest entry; null when the VM has no
    /// file-backed NVRAM or libvirt has not made it yet (the restored VM then gets a fresh one from its template). A
    /// restore takes the NVRAM from here, so it needs nothing of the original's host.
    /// </summary>
    private async Task<object?> CopyNvramIntoSetAsync(BackupRunState run, CancellationToken cancellationToken)
    {
        if (string.IsNullOrWhiteSpace(run.DomainXml) || DomainXmlEditor.NvramFile(run.DomainXml) is not { } source || !File.Exists(source))
        {
            return null;
        }

        var length = new FileInfo(source).Length;
        if (length > MaxNvramBytes)
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"the VM's NVRAM '{source}' holds {length} bytes, more than an NVRAM file can ({MaxNvramBytes}); not copied");
        }

        var content = await File.ReadAllBytesAsync(source, cancellationToken);
        await SafeFiles.WriteAtomicAsync(Path.Combine(run.BackupSetPath, BackupSetManifest.NvramFileName), content, backupOptions.Value.Privacy(), cancellationToken);
        return new
        {
            file = BackupSetManifest.NvramFileName,
            format = "raw",
            source,
            bytes = content.Length,
            sha256 = Convert.ToHexStringLower(SHA256.HashData(content)),
        };
    }
}
