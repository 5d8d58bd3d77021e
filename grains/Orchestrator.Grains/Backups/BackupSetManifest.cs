using System.Text.Json;
using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.Backups;

/// <summary>One disk of a backup set, as its manifest records it.</summary>
public sealed record ManifestDisk(string Target, string File, string Format, string Source, string Sha256)
{
    /// <summary>A backup-job set's per-disk level (<c>full</c> or <c>incremental</c>); null for overlay sets.</summary>
    public string? Level { get; init; }

    /// <summary>The backing entry the manifest says the image's header holds (relative to the set), and its format.</summary>
    public string? BackingFile { get; init; }

    public string? BackingFormat { get; init; }
}

/// <summary>The VM's NVRAM copied into the set (raw), as its manifest records it.</summary>
public sealed record ManifestNvram(string File, string Source, string Sha256);

/// <summary>
/// A backup set found on this host and its manifest, checked: everything a restore needs (disks, formats, checksums,
/// domain XML, NVRAM) comes from here, never from the source VM's grain, so a set made on a host whose silo is down
/// restores on any host that reaches the same backup root.
/// </summary>
public sealed record BackupSetManifest(
    string SetPath,
    string Run,
    string Host,
    string Vm,
    IReadOnlyList<ManifestDisk> Disks,
    ManifestNvram? Nvram,
    string? DomainXml)
{
    /// <summary>A backup-job set's level (<c>full</c> or <c>incremental</c>); null for overlay sets.</summary>
    public string? Level { get; init; }

    /// <summary>How the set was made: <c>backup-job</c>, <c>live</c>, <c>offline</c> (null in older sets).</summary>
    public string? Method { get; init; }

    /// <summary>An incremental's parent: its run id, its run key (HOST/VM/RUN) and its set directory as recorded.</summary>
    public string? ParentRunId { get; init; }

    public string? ParentRun { get; init; }

    public string? ParentSet { get; init; }

    /// <summary>Runs before this one in its chain (0 for a full); null when the manifest does not say.</summary>
    public int? ChainIndex { get; init; }

    /// <summary>The libvirt checkpoint made with this run, and the one it copied the changes since.</summary>
    public string? Checkpoint { get; init; }

    public string? ParentCheckpoint { get; init; }

    /// <summary>Name of the NVRAM copy inside a set (always raw).</summary>
    public const string NvramFileName = "nvram.fd";

    /// <summary>How deep below a root a set's <c>VM/RUN</c> directory may lie (ROOT/HOST/POLICY/VM/RUN is depth 2).</summary>
    public const int MaxSearchDepth = 4;

    private const long MaxManifestBytes = 16L << 20;

    private const int MaxDirectoriesVisited = 100_000;

    /// <summary>
    /// Finds the set of <paramref name="runKey"/> (HOST/VM/RUN) by the backup layout (<c>TARGET/VM/RUN/manifest.json</c>)
    /// under this host's configured roots: every directory is walked without following a symbolic link, the set's real
    /// path must lie under a root, and its manifest must name exactly this run.
    /// </summary>
    public static BackupSetManifest Locate(BackupOptions options, string runKey, string field = "key")
    {
        ArgumentNullException.ThrowIfNull(options);
        var (_, vm, runId) = BackupRunKeys.Parse(runKey, field);
        if (options.Roots.Count == 0)
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, "no backup roots are configured on this host (Orchestrator:Backup:Roots): it reaches no backup set", field: field);
        }

        var found = new List<BackupSetManifest>();
        foreach (var root in options.Roots.Select(SafeFiles.ResolveExistingPrefix).Distinct(StringComparer.Ordinal))
        {
            foreach (var candidate in Candidates(root, vm, runId))
            {
                var manifest = Read(candidate, runKey, options, field);
                if (manifest.Run == runKey && found.All(f => f.SetPath != manifest.SetPath))
                {
                    found.Add(manifest);
                }
            }
        }

        return found.Count switch
        {
            1 => found[0],
            0 => throw new OrchestratorException(
                ErrorCode.NotFound,
                $"no backup set of run '{runKey}' under the backup roots of this host ({string.Join(", ", options.Roots)}): looked for a directory {vm}/{runId} holding a manifest of that run, at most {MaxSearchDepth} levels below each root",
                field: field),
            _ => throw new OrchestratorException(ErrorCode.FailedPrecondition, $"run '{runKey}' has {found.Count} backup sets ({string.Join(", ", found.Select(f => f.SetPath))}); restore refuses to pick one", field: field),
        };
    }

    /// <summary>Directories <c>D/VM/RUN</c> for every D at most <see cref="MaxSearchDepth"/> below the root, links never followed.</summary>
    private static IEnumerable<string> Candidates(string root, string vm, string runId)
    {
        if (!Directory.Exists(root))
        {
            yield break;
        }

        var skipLinks = new EnumerationOptions { AttributesToSkip = FileAttributes.ReparsePoint, IgnoreInaccessible = true, RecurseSubdirectories = false };
        var level = new List<string> { root };
        var visited = 0;
        for (var depth = 0; depth <= MaxSearchDepth && level.Count > 0; depth++)
        {
            var next = new List<string>();
            foreach (var directory in level)
            {
                var candidate = Path.Combine(directory, vm, runId);
                if (Directory.Exists(candidate) && SafeFiles.ResolveExistingPrefix(candidate) == candidate)
                {
                    yield return candidate;
                }

                // A set holds files only: nothing to find below one.
                if (depth == MaxSearchDepth || File.Exists(Path.Combine(directory, "manifest.json")))
                {
                    continue;
                }

                foreach (var child in Directory.EnumerateDirectories(directory, "*", skipLinks))
                {
                    if (++visited > MaxDirectoriesVisited)
                    {
                        throw new OrchestratorException(ErrorCode.FailedPrecondition, $"more than {MaxDirectoriesVisited} directories under the backup root '{root}': the set of '{vm}/{runId}' was not found within that bound");
                    }

                    next.Add(child);
                }
            }

            level = next;
        }
    }

    /// <summary>Reads and checks the manifest of the set at <paramref name="setPath"/> (a real path under a root).</summary>
    public static BackupSetManifest Read(string setPath, string runKey, BackupOptions options, string field = "key")
    {
        ArgumentNullException.ThrowIfNull(options);
        var path = Path.Combine(setPath, "manifest.json");
        string Bad(string reason) => $"the manifest of run '{runKey}' ({path}) {reason}";
        var real = SafeFiles.ResolveExistingPrefix(setPath);
        if (real != Path.TrimEndingDirectorySeparator(Path.GetFullPath(setPath)) || BackupTargets.RealRootOf(real, options) is null)
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"the backup set '{setPath}' resolves to '{real}', through a symbolic link or outside the backup roots; not read", field: field);
        }

        var file = new FileInfo(path);
        if (!file.Exists || file.LinkTarget is not null || file.Length > MaxManifestBytes)
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, Bad($"is missing, a symbolic link or larger than {MaxManifestBytes} bytes"), field: field);
        }

        try
        {
            using var document = JsonDocument.Parse(File.ReadAllBytes(path));
            var root = document.RootElement;
            var run = Text(root, "run");
            var host = Text(root, "host");
            var vm = Text(root, "vm");
            if (run != runKey)
            {
                // Another run's manifest in this directory: not this set (the caller looks further).
                return new BackupSetManifest(real, run ?? "", host ?? "", vm ?? "", [], null, null);
            }

            var disks = new List<ManifestDisk>();
            foreach (var disk in root.TryGetProperty("disks", out var array) && array.ValueKind == JsonValueKind.Array ? array.EnumerateArray() : throw new FormatException("has no disks"))
            {
                var target = Text(disk, "target") ?? throw new FormatException("has a disk without a target");
                GrainKeys.ValidateDiskTarget(target, field);
                var format = Text(disk, "format");
                if (format is not ("raw" or "qcow2"))
                {
                    throw new FormatException($"names format '{format}' for disk {target} (raw or qcow2 expected)");
                }

                // The backup names every copy TARGET.FORMAT inside its set: anything else is not one of ours.
                var name = Text(disk, "file");
                if (name != $"{target}.{format}")
                {
                    throw new FormatException($"names file '{name}' for disk {target}; a set's copy is '{target}.{format}'");
                }

                var source = Text(disk, "source");
                if (source is null || !Path.IsPathFullyQualified(source) || source.Contains('\0', StringComparison.Ordinal))
                {
                    throw new FormatException($"has no absolute source path for disk {target}");
                }

                var sha256 = Sha256Of(disk) ?? throw new FormatException($"has no SHA-256 for disk {target}: the copy cannot be verified");
                if (disks.Any(d => d.Target == target))
                {
                    throw new FormatException($"names disk {target} twice");
                }

                disks.Add(new ManifestDisk(target, Path.Combine(real, name), format, source, sha256)
                {
                    Level = Text(disk, "level"),
                    BackingFile = Text(disk, "backing_file"),
                    BackingFormat = Text(disk, "backing_format"),
                });
            }

            if (disks.Count == 0)
            {
                throw new FormatException("has no disks");
            }

            ManifestNvram? nvram = null;
            if (root.TryGetProperty("nvram", out var n) && n.ValueKind == JsonValueKind.Object)
            {
                if (Text(n, "file") != NvramFileName || Text(n, "format") != "raw")
                {
                    throw new FormatException($"names an NVRAM copy other than '{NvramFileName}' (raw)");
                }

                nvram = new ManifestNvram(Path.Combine(real, NvramFileName), Text(n, "source") ?? "", Sha256Of(n) ?? throw new FormatException("has no SHA-256 for the NVRAM copy"));
            }

            return new BackupSetManifest(real, run, host ?? "", vm ?? "", disks, nvram, Text(root, "domain_xml"))
            {
                Level = Text(root, "level"),
                Method = Text(root, "method"),
                ParentRunId = Text(root, "parent"),
                ParentRun = Text(root, "parent_run"),
                ParentSet = Text(root, "parent_set"),
                ChainIndex = root.TryGetProperty("chain_index", out var index) && index.ValueKind == JsonValueKind.Number && index.TryGetInt32(out var i) ? i : null,
                Checkpoint = Text(root, "checkpoint"),
                ParentCheckpoint = Text(root, "parent_checkpoint"),
            };
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException or FormatException or InvalidOperationException)
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, Bad(e is FormatException ? e.Message : $"cannot be read: {e.Message}"), field: field);
        }
        catch (OrchestratorException e) when (e.Code == ErrorCode.InvalidArgument)
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, Bad($"is not valid: {e.Message}"), field: field);
        }
    }

    private static string? Text(JsonElement element, string name) =>
        element.ValueKind == JsonValueKind.Object && element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    private static string? Sha256Of(JsonElement element) =>
        Text(element, "sha256") is { Length: 64 } hex && hex.All(char.IsAsciiHexDigit) ? hex.ToLowerInvariant() : null;
}
