using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.Backups;

/// <summary>
/// A backup-job set and every set it builds on (its parent, the parent's parent, ... down to the chain's full), walked
/// from the manifests and image headers alone, each hop checked before anything reads an image's data: the parent set
/// is the sibling directory <c>../&lt;parent run&gt;</c> (the place each incremental image's header points to), under a
/// backup root, reached through no symbolic link, its manifest of exactly that run; the run keys, checkpoints and chain
/// indexes line up; every image's qcow2 header (read with <c>qemu-img info -f qcow2</c>, its backing never opened)
/// names exactly the parent set's image of the same disk (<c>../&lt;parent run&gt;/vdX.qcow2</c>, format qcow2), or no
/// backing at all for a disk copied whole. Anything else (a backing outside the chain, a <c>json:</c> name, a loop, a
/// missing or foreign parent, a raw disk claiming a backing) is refused naming the set and the disk. Used by restore
/// (and so by restores on another host and test restores) and by <c>backup verify</c>.
/// </summary>
internal sealed class BackupChain
{
    /// <summary>Longest chain walked (sets, the full included); a longer one is refused rather than followed.</summary>
    public const int MaxLength = 1000;

    private BackupChain(IReadOnlyList<BackupSetManifest> sets) => Sets = sets;

    /// <summary>The sets, the asked-for one first, the chain's full last.</summary>
    public IReadOnlyList<BackupSetManifest> Sets { get; }

    public BackupSetManifest Top => Sets[0];

    /// <summary>
    /// The images below the top set's image of <paramref name="target"/>, top to bottom, each with its format (always
    /// qcow2): empty for a disk the top set holds whole (a full, a raw disk).
    /// </summary>
    public IReadOnlyList<DiskLayer> LayersBelow(string target)
    {
        var layers = new List<DiskLayer>();
        for (var i = 0; i < Sets.Count - 1 && Disk(Sets[i], target) is { Level: BackupLevels.Incremental }; i++)
        {
            var below = Disk(Sets[i + 1], target)!;
            layers.Add(new DiskLayer(below.File, below.Format));
        }

        return layers;
    }

    /// <summary>Every image file a flattened copy of <paramref name="target"/> reads: the top set's and the layers below.</summary>
    public IEnumerable<(BackupSetManifest Set, ManifestDisk Disk)> ImagesOf(string target)
    {
        yield return (Top, Disk(Top, target)!);
        for (var i = 0; i < Sets.Count - 1 && Disk(Sets[i], target) is { Level: BackupLevels.Incremental }; i++)
        {
            yield return (Sets[i + 1], Disk(Sets[i + 1], target)!);
        }
    }

    /// <summary>
    /// Walks the chain of <paramref name="top"/> (a backup-job set: its manifest names a level) and checks every hop
    /// and header; throws FAILED_PRECONDITION (field <paramref name="field"/>) at the first problem. Reads manifests and
    /// headers only.
    /// </summary>
    public static async Task<BackupChain> WalkAsync(BackupSetManifest top, BackupOptions options, IDiskImages images, CancellationToken cancellationToken, string field = "key")
    {
        ArgumentNullException.ThrowIfNull(top);
        var sets = new List<BackupSetManifest> { top };
        for (var set = top; ;)
        {
            var parent = ParentOf(set, sets, options, field);
            await CheckHeadersAsync(set, parent, images, cancellationToken, field);
            if (parent is null)
            {
                return new BackupChain(sets);
            }

            sets.Add(parent);
            set = parent;
        }
    }

    /// <summary>
    /// The SHA-256 of each image file of <paramref name="set"/> read back and compared with its manifest; throws
    /// FAILED_PRECONDITION naming the set and disk at the first mismatch.
    /// </summary>
    public static async Task VerifyDigestAsync(BackupSetManifest set, ManifestDisk disk, IDiskImages images, CancellationToken cancellationToken, string field = "key")
    {
        if (!await images.ExistsAsync(disk.File, cancellationToken) || new FileInfo(disk.File).LinkTarget is not null)
        {
            throw Broken(set, disk.Target, $"its image {disk.File} is missing or a symbolic link", field);
        }

        var sha256 = await images.ComputeSha256Async(disk.File, cancellationToken);
        if (!string.Equals(sha256, disk.Sha256, StringComparison.OrdinalIgnoreCase))
        {
            throw Broken(set, disk.Target, $"its image {disk.File} does not match its manifest checksum: {sha256} read, {disk.Sha256} recorded", field);
        }
    }

    /// <summary>
    /// <c>backup verify</c>: every set of the chain of <paramref name="runKey"/> (one set for a full or an overlay
    /// set), top first, each with what was checked and whether it passed; the walk stops at the first set whose link to
    /// its parent fails (that set fails naming why).
    /// </summary>
    public static async Task<IReadOnlyList<VerifiedSet>> VerifyAsync(string runKey, BackupOptions options, IDiskImages images, CancellationToken cancellationToken)
    {
        var results = new List<VerifiedSet>();
        BackupSetManifest set;
        try
        {
            set = BackupSetManifest.Locate(options, runKey);
        }
        catch (OrchestratorException e) when (e.Code == ErrorCode.FailedPrecondition)
        {
            results.Add(new VerifiedSet(runKey, null, null, null, false, [], e.Message));
            return results;
        }

        var seen = new List<BackupSetManifest> { set };
        while (true)
        {
            var checks = new List<string> { "manifest: read, names this run, every disk's file, format and SHA-256 recorded" };
            string? error = null;
            BackupSetManifest? parent = null;
            try
            {
                foreach (var disk in set.Disks)
                {
                    await VerifyDigestAsync(set, disk, images, cancellationToken);
                    checks.Add($"{disk.Target}: {disk.Format} image {Path.GetFileName(disk.File)}, SHA-256 matches the manifest");
                }

                if (set.Level is not null)
                {
                    parent = ParentOf(set, seen, options, "key");
                    if (parent is not null)
                    {
                        checks.Add($"parent: run {parent.Run} ({parent.SetPath}), checkpoint {set.ParentCheckpoint}, chain index {parent.ChainIndex} -> {set.ChainIndex}");
                    }

                    await CheckHeadersAsync(set, parent, images, cancellationToken, "key");
                    checks.AddRange(set.Disks.Select(d => d.Format == "raw"
                        ? $"{d.Target}: raw, whole (no backing)"
                        : d.Level == BackupLevels.Incremental
                            ? $"{d.Target}: header backing is {d.BackingFile} (qcow2), the parent set's image"
                            : $"{d.Target}: header names no backing (whole)"));
                }
            }
            catch (OrchestratorException e)
            {
                error = e.Message;
            }

            results.Add(new VerifiedSet(set.Run, set.SetPath, set.Level, set.ChainIndex, error is null, checks, error));
            if (error is not null || parent is null)
            {
                return results;
            }

            seen.Add(parent);
            set = parent;
        }
    }

    /// <summary>
    /// The parent set of <paramref name="set"/> (null for a full), found and checked: the manifest's parent fields agree
    /// with each other and with the set's own run, the parent is the sibling directory its images' headers point to,
    /// under a backup root through no link, not already in the chain, a backup-job set of that very run whose checkpoint
    /// and chain index line up.
    /// </summary>
    private static BackupSetManifest? ParentOf(BackupSetManifest set, IReadOnlyList<BackupSetManifest> seen, BackupOptions options, string field)
    {
        var (host, vm, _) = BackupRunKeys.Parse(set.Run, field);
        if (set.Level == BackupLevels.Full)
        {
            if (set.ParentRunId is not null || set.ParentRun is not null || set.ParentSet is not null || set.ParentCheckpoint is not null || set.ChainIndex is not (null or 0))
            {
                throw Broken(set, null, "it says it is a full but names a parent (parent, parent_run, parent_set, parent_checkpoint or a chain_index other than 0)", field);
            }

            return null;
        }

        if (set.Level != BackupLevels.Incremental)
        {
            throw Broken(set, null, $"its level is '{set.Level}' (full or incremental expected)", field);
        }

        if (set.ParentRun is null || set.ParentRunId is null || set.ParentCheckpoint is null || set.Checkpoint is null || set.ChainIndex is not > 0)
        {
            throw Broken(set, null, "it is an incremental but its manifest lacks parent, parent_run, checkpoint, parent_checkpoint or a chain_index above 0", field);
        }

        string parentRunId;
        try
        {
            var (parentHost, parentVm, id) = BackupRunKeys.Parse(set.ParentRun, "parent_run");
            if (parentHost != host || parentVm != vm)
            {
                throw Broken(set, null, $"its parent_run '{set.ParentRun}' is a run of another VM", field);
            }

            parentRunId = id;
        }
        catch (OrchestratorException e) when (e.Code == ErrorCode.InvalidArgument)
        {
            throw Broken(set, null, $"its parent_run is not a run key: {e.Message}", field);
        }

        if (set.ParentRunId != parentRunId || (set.ParentSet is { } recorded && Path.GetFileName(Path.TrimEndingDirectorySeparator(recorded)) != parentRunId))
        {
            throw Broken(set, null, $"its parent fields disagree: parent '{set.ParentRunId}', parent_run '{set.ParentRun}', parent_set '{set.ParentSet}'", field);
        }

        // The images' headers name ../<parent run>/vdX.qcow2: the parent is that sibling directory, wherever the root
        // is mounted on this host (parent_set records the path on the host that made it).
        var directory = Path.Combine(Path.GetDirectoryName(set.SetPath)!, parentRunId);
        if (seen.Any(s => s.SetPath == directory || s.Run == set.ParentRun) || seen.Count >= MaxLength)
        {
            throw Broken(set, null, seen.Count >= MaxLength ? $"the chain is longer than {MaxLength} sets" : $"its parent {set.ParentRun} is already in the chain (a loop)", field);
        }

        if (!Directory.Exists(directory) || new DirectoryInfo(directory).LinkTarget is not null)
        {
            throw Broken(set, null, $"its parent set {directory} (run {set.ParentRun}) is missing or a symbolic link", field);
        }

        BackupSetManifest parent;
        try
        {
            parent = BackupSetManifest.Read(directory, set.ParentRun, options, field);
        }
        catch (OrchestratorException e)
        {
            throw Broken(set, null, $"its parent set does not check out: {e.Message}", field);
        }

        if (parent.Run != set.ParentRun)
        {
            throw Broken(set, null, $"the manifest in its parent set {directory} is of run '{parent.Run}', not {set.ParentRun}", field);
        }

        if (parent.ParentRun is { } above && (above == set.Run || seen.Any(s => s.Run == above)))
        {
            throw Broken(set, null, $"its parent {parent.Run} names {above} as its own parent: the chain loops", field);
        }

        if (parent.Level is not (BackupLevels.Full or BackupLevels.Incremental))
        {
            throw Broken(set, null, $"its parent {parent.Run} is not a backup-job set (level '{parent.Level}')", field);
        }

        if (parent.Checkpoint != set.ParentCheckpoint)
        {
            throw Broken(set, null, $"it copied the changes since checkpoint {set.ParentCheckpoint}, but its parent {parent.Run} made checkpoint {parent.Checkpoint ?? "(none)"}", field);
        }

        if (parent.ChainIndex is not { } parentIndex || parentIndex != set.ChainIndex - 1)
        {
            throw Broken(set, null, $"its chain index {set.ChainIndex} does not follow its parent's ({parent.ChainIndex?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none"})", field);
        }

        return parent;
    }

    /// <summary>
    /// Each disk's level, the manifest's backing entry and the image header's backing entry (qemu-img info -f qcow2:
    /// nothing probed, no backing opened) against what the chain says they must be.
    /// </summary>
    private static async Task CheckHeadersAsync(BackupSetManifest set, BackupSetManifest? parent, IDiskImages images, CancellationToken cancellationToken, string field)
    {
        foreach (var disk in set.Disks)
        {
            if (disk.Format == "raw")
            {
                // Raw holds no header and so no backing: copied whole in every set.
                if (disk.BackingFile is not null || disk.BackingFormat is not null || disk.Level == BackupLevels.Incremental)
                {
                    throw Broken(set, disk.Target, $"it is a raw image but its manifest claims a backing ('{disk.BackingFile}', level {disk.Level}); a raw disk is copied whole", field);
                }

                continue;
            }

            string? expected = null;
            if (disk.Level == BackupLevels.Incremental)
            {
                if (parent is null)
                {
                    throw Broken(set, disk.Target, "it is an incremental image in a set without a parent", field);
                }

                if (parent.Disks.FirstOrDefault(d => d.Target == disk.Target) is not { Format: "qcow2" })
                {
                    throw Broken(set, disk.Target, $"its parent {parent.Run} holds no qcow2 image of this disk", field);
                }

                expected = $"../{Path.GetFileName(parent.SetPath)}/{disk.Target}.qcow2";
                if (disk.BackingFile != expected || disk.BackingFormat != "qcow2")
                {
                    throw Broken(set, disk.Target, $"its manifest names backing '{disk.BackingFile}' ({disk.BackingFormat}); the chain needs '{expected}' (qcow2)", field);
                }
            }
            else if (disk.Level is not (BackupLevels.Full or null) || disk.BackingFile is not null || disk.BackingFormat is not null)
            {
                throw Broken(set, disk.Target, $"its manifest says level '{disk.Level}' with backing '{disk.BackingFile}'; a whole image has no backing", field);
            }

            ImageInfo header;
            try
            {
                header = await images.InfoAsync(disk.File, "qcow2", cancellationToken);
            }
            catch (HypervisorException e)
            {
                throw Broken(set, disk.Target, $"its image {disk.File} cannot be read as qcow2: {e.Message}", field);
            }

            if (header.BackingEntry != expected || (expected is not null && header.BackingFormat != "qcow2"))
            {
                var named = header.BackingEntry is null
                    ? "no backing"
                    : header.BackingEntry.StartsWith("json:", StringComparison.Ordinal)
                        ? "a json: backing specification (never followed)"
                        : $"backing '{(header.BackingEntry.Length > 200 ? header.BackingEntry[..200] + "..." : header.BackingEntry)}' ({header.BackingFormat ?? "format not named"})";
                throw Broken(set, disk.Target, $"its image header names {named}; the chain needs {(expected is null ? "no backing" : $"'{expected}' (qcow2)")}", field);
            }
        }
    }

    private static ManifestDisk? Disk(BackupSetManifest set, string target) => set.Disks.FirstOrDefault(d => d.Target == target);

    private static OrchestratorException Broken(BackupSetManifest set, string? disk, string reason, string field) =>
        new(ErrorCode.FailedPrecondition, $"backup set {set.Run} ({set.SetPath}){(disk is null ? "" : $", disk {disk}")}: {reason}", field: field);
}
