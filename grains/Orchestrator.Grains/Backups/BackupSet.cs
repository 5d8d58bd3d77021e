using System.Text.Json;
using Microsoft.Extensions.Logging;
using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.Backups;

/// <summary>
/// The files of one backup set, in one place: its directory (<c>&lt;target&gt;/&lt;vm&gt;/&lt;run&gt;</c>, made private and
/// never through a symbolic link), its image paths, its manifest (written atomically, read only where the set really
/// is) and its deletion (for a failed run and for retention). Backup, retention and restore all go through here.
/// </summary>
internal sealed partial class BackupSet(string path, BackupOptions options)
{
    public const string ManifestFileName = "manifest.json";

    /// <summary>An NVRAM file is small (a few MiB at most); anything bigger is neither copied into a set nor restored from one.</summary>
    public const long MaxNvramBytes = 64L << 20;

    private static readonly JsonSerializerOptions ManifestJson = new() { WriteIndented = true };

    public string Path { get; } = path;

    public string ManifestPath => System.IO.Path.Combine(Path, ManifestFileName);

    /// <summary>The set of run <paramref name="runId"/> of VM <paramref name="vm"/> under a resolved target directory.</summary>
    public static BackupSet For(string target, string vm, string runId, BackupOptions options) =>
        new(System.IO.Path.Combine(target, vm, runId), options);

    /// <summary>The copy of disk <paramref name="diskTarget"/> in this set: <c>vda.qcow2</c>, <c>vdb.raw</c>.</summary>
    public string ImagePath(string diskTarget, string format) => System.IO.Path.Combine(Path, $"{diskTarget}.{format}");

    public bool Exists => Directory.Exists(Path);

    /// <summary>Creates the set's directory (and any missing one from its root down), private, through no symbolic link.</summary>
    public void CreateDirectory()
    {
        var root = BackupTargets.RealRootOf(Path, options)
            ?? throw new OrchestratorException(ErrorCode.FailedPrecondition, $"'{Path}' is not under a configured backup root (Orchestrator:Backup:Roots)");
        var privacy = options.Privacy();
        if (!Directory.Exists(root))
        {
            // A configured root that is not there yet (the administrator's own path): made like the rest.
            var existing = root;
            while (!Directory.Exists(existing))
            {
                existing = System.IO.Path.GetDirectoryName(existing) ?? "/";
            }

            SafeFiles.CreateDirectories(existing, root, privacy);
        }

        SafeFiles.CreateDirectories(root, Path, privacy);
    }

    /// <summary>Writes and deletes a small file in the set (created exclusively, never through a link): the target takes writes.</summary>
    public async Task ProbeWritableAsync(string content, CancellationToken cancellationToken)
    {
        var probe = System.IO.Path.Combine(Path, ".write-probe");
        using (var handle = SafeFiles.CreateNew(probe, options.Privacy()))
        {
            await RandomAccess.WriteAsync(handle, System.Text.Encoding.UTF8.GetBytes(content), 0, cancellationToken);
        }

        File.Delete(probe);
    }

    /// <summary>
    /// Writes the manifest (any JSON-serializable shape) beside the images: a new file of a random name
    /// (O_EXCL|O_NOFOLLOW, private) renamed over manifest.json, so no planted link is followed.
    /// </summary>
    public async Task WriteManifestAsync(object manifest, CancellationToken cancellationToken)
    {
        CreateDirectory();
        await SafeFiles.WriteAtomicAsync(ManifestPath, JsonSerializer.SerializeToUtf8Bytes(manifest, ManifestJson), options.Privacy(), cancellationToken);

        // The set is durable as a whole: every file in it was fsynced when written, and one fsync of the set's directory
        // (the images' and the manifest's names) and one of its parent (the set's own name) make the names durable too.
        SafeFiles.SyncDirectory(Path);
        SafeFiles.SyncDirectory(System.IO.Path.GetDirectoryName(Path)!);
    }

    /// <summary>
    /// Copies the VM's NVRAM file (UEFI variables) into the set as raw <see cref="BackupSetManifest.NvramFileName"/>
    /// (private, written atomically, never through a link) and returns its manifest entry; null when the VM has no
    /// file-backed NVRAM or libvirt has not made it yet (the restored VM then gets a fresh one from its template). A
    /// restore takes the NVRAM from here, so it needs nothing of the original's host.
    /// </summary>
    public async Task<object?> CopyNvramAsync(string? domainXml, CancellationToken cancellationToken)
    {
        if (string.IsNullOrWhiteSpace(domainXml) || DomainXmlEditor.NvramFile(domainXml) is not { } source || !File.Exists(source))
        {
            return null;
        }

        var length = new FileInfo(source).Length;
        if (length > MaxNvramBytes)
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"the VM's NVRAM '{source}' holds {length} bytes, more than an NVRAM file can ({MaxNvramBytes}); not copied");
        }

        CreateDirectory();
        var content = await File.ReadAllBytesAsync(source, cancellationToken);
        await SafeFiles.WriteAtomicAsync(System.IO.Path.Combine(Path, BackupSetManifest.NvramFileName), content, options.Privacy(), cancellationToken);
        return new
        {
            file = BackupSetManifest.NvramFileName,
            format = "raw",
            source,
            bytes = content.Length,
            sha256 = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(content)),
        };
    }

    /// <summary>
    /// Deletes the set's directory, only where it really is what was recorded (no symbolic link on its path, still
    /// under a root, not the root itself), and without following any link inside it. Failures are logged, not thrown:
    /// a set that cannot be deleted never fails the run that deletes it.
    /// </summary>
    public void Delete(ILogger logger, string vmKey)
    {
        try
        {
            var real = SafeFiles.ResolveExistingPrefix(Path);
            if (real != System.IO.Path.TrimEndingDirectorySeparator(System.IO.Path.GetFullPath(Path)) || BackupTargets.RealRootOf(real, options) is not { } root || real == root)
            {
                LogDeleteRefused(logger, vmKey, Path, real);
                return;
            }

            SafeFiles.DeleteTree(Path);
        }
        catch (IOException e)
        {
            LogDeleteFailed(logger, vmKey, Path, e.Message);
        }
        catch (UnauthorizedAccessException e)
        {
            LogDeleteFailed(logger, vmKey, Path, e.Message);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: not deleting backup set {Path}: it resolves to {Real}, through a symbolic link or outside the backup roots")]
    private static partial void LogDeleteRefused(ILogger logger, string key, string path, string real);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Key}: deleting backup set {Path} failed: {Reason}")]
    private static partial void LogDeleteFailed(ILogger logger, string key, string path, string reason);
}
