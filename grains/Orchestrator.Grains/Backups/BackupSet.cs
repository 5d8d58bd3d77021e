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

    /// <summary>A manifest larger than this is not read (it holds a domain XML and one entry per disk).</summary>
    private const long MaxManifestBytes = 16L << 20;

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
    }

    /// <summary>
    /// The manifest's <c>domain_xml</c>, read only where the set really is (no symbolic link on its path or as the
    /// manifest, under a root, not oversized); null when there is no such manifest or it holds no XML. Throws
    /// <see cref="IOException"/>, <see cref="UnauthorizedAccessException"/> or <see cref="JsonException"/> when it
    /// cannot be read.
    /// </summary>
    public async Task<string?> ReadManifestDomainXmlAsync(CancellationToken cancellationToken)
    {
        var real = SafeFiles.ResolveExistingPrefix(Path);
        var file = new FileInfo(ManifestPath);
        if (real != System.IO.Path.TrimEndingDirectorySeparator(System.IO.Path.GetFullPath(Path))
            || BackupTargets.RealRootOf(real, options) is null
            || !file.Exists
            || file.LinkTarget is not null
            || file.Length > MaxManifestBytes)
        {
            return null;
        }

        using var document = JsonDocument.Parse(await File.ReadAllBytesAsync(ManifestPath, cancellationToken));
        return document.RootElement.TryGetProperty("domain_xml", out var element) && element.ValueKind == JsonValueKind.String
            ? element.GetString()
            : null;
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
