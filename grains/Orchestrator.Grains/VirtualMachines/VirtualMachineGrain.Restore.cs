using Orchestrator.Grains.Backups;
using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.VirtualMachines;

internal sealed partial class VirtualMachineGrain
{
    /// <summary>
    /// A completed backup set becomes new disk images beside the original ones and, on request, a new defined
    /// VM (new name, new uuid). Refuses to overwrite anything.
    /// </summary>
    public async Task<RestoreResult> RestoreAsync(RestoreRequest request, CancellationToken cancellationToken = default)
    {
        GrainKeys.ValidateVmName(request.NewName, "new_name");
        var (run, runId) = await RestorableRunAsync(request.RunKey, cancellationToken);
        if (request.Define && (await hypervisor.ListDomainsAsync(cancellationToken)).Any(d => d.Name == request.NewName))
        {
            throw new OrchestratorException(ErrorCode.AlreadyExists, $"a VM named '{request.NewName}' already exists on host '{Key.Host}'", field: "new_name");
        }

        using var activity = Telemetry.Source.StartActivity("backup.restore");
        Tag(activity, runId);
        var plan = await PlanRestoreAsync(run, request.RunKey, request.NewName, request.ImageDirectory, request.Define, null, cancellationToken);
        return await ExecuteRestoreAsync(run, plan, cancellationToken);
    }

    /// <summary>What a restore will write: each disk's new image and, when defining, the new VM's definition.</summary>
    private sealed record RestorePlan(string NewName, IReadOnlyDictionary<string, (string Path, string Format)> Images, RestoredDefinition? Definition);

    /// <summary>The run, when it is this VM's and completed with its set still there.</summary>
    private async Task<(BackupRunState Run, string RunId)> RestorableRunAsync(string runKey, CancellationToken cancellationToken)
    {
        var (host, vm, runId) = BackupRunKeys.Parse(runKey);
        if (host != Key.Host || vm != Key.Vm)
        {
            throw OrchestratorException.InvalidArgument("run", $"run '{runKey}' does not belong to VM '{VmKey}'");
        }

        var run = await FindRunAsync(runId, cancellationToken);
        if (run.Step != BackupStep.Completed || !Directory.Exists(run.BackupSetPath) && run.Disks.Any(d => !File.Exists(d.BackupPath)))
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"run '{runKey}' is {run.Step} and has no complete backup set to restore");
        }

        return (run, runId);
    }

    /// <summary>
    /// Names the new images (refusing any that exist) and builds the new definition (refusing what it cannot make the
    /// new VM's own); writes nothing. <paramref name="editDefinition"/> changes the restored definition further (a
    /// test restore's throwaway VM: no network, its own console file).
    /// </summary>
    private async Task<RestorePlan> PlanRestoreAsync(
        BackupRunState run,
        string runKey,
        string newName,
        string? imageDirectory,
        bool define,
        Func<RestoredDefinition, RestoredDefinition>? editDefinition,
        CancellationToken cancellationToken)
    {
        var requested = imageDirectory is null ? null : RestoreDirectory(imageDirectory, run);
        var images = new Dictionary<string, (string Path, string Format)>(StringComparer.Ordinal);
        foreach (var disk in run.Disks)
        {
            // Beside the original disk (its real directory) unless a confined directory was asked for.
            var directory = requested ?? SafeFiles.ResolveExistingPrefix(Path.GetDirectoryName(disk.BasePath)!);
            var path = Path.Combine(directory, $"{newName}-{disk.Target}.{disk.BackupFormat}");
            if (await hypervisor.Images.ExistsAsync(path, cancellationToken) || new FileInfo(path).LinkTarget is not null)
            {
                throw new OrchestratorException(ErrorCode.AlreadyExists, $"'{path}' already exists; restore never overwrites", field: "new_name");
            }

            images[disk.Target] = (path, disk.BackupFormat);
        }

        // The new definition first: what it cannot make the new VM's own is refused before anything is written.
        var definition = define ? DomainXmlEditor.ForRestore(await ReadManifestDomainXmlAsync(run, runKey, cancellationToken), newName, images, File.Exists) : null;
        if (definition is not null && editDefinition is not null)
        {
            definition = editDefinition(definition);
        }

        foreach (var file in definition?.NewFiles.Concat(definition.FilesToCopy.Select(c => c.To)) ?? [])
        {
            if (SafeFiles.Occupied(file))
            {
                throw new OrchestratorException(ErrorCode.AlreadyExists, $"'{file}' (the restored VM's own file) already exists; restore never writes into a file that is not its own", field: "new_name");
            }
        }

        return new RestorePlan(newName, images, definition);
    }

    /// <summary>
    /// Copies each disk's backup image to its new image (checked against the manifest checksum while copying), copies
    /// the new VM's own files and defines it. On failure deletes what it wrote (images a defined domain uses stay).
    /// </summary>
    private async Task<RestoreResult> ExecuteRestoreAsync(BackupRunState run, RestorePlan plan, CancellationToken cancellationToken)
    {
        var (images, definition) = (plan.Images, plan.Definition);
        var privacy = backupOptions.Value.Privacy();
        var created = new List<string>();
        var createdFiles = new List<string>();
        try
        {
            foreach (var disk in run.Disks)
            {
                var (path, _) = images[disk.Target];
                var copy = await hypervisor.Images.CopyAsync(disk.BackupPath, disk.BackupFormat, path, new CopyOptions { ComputeSha256 = disk.Sha256 is not null, Privacy = privacy }, null, cancellationToken);
                created.Add(path);
                if (disk.Sha256 is not null && !string.Equals(copy.Sha256, disk.Sha256, StringComparison.OrdinalIgnoreCase))
                {
                    throw new OrchestratorException(ErrorCode.Internal, $"backup image of '{disk.Target}' does not match its manifest checksum");
                }
            }

            Guid? uuid = null;
            if (definition is not null)
            {
                foreach (var (from, to) in definition.FilesToCopy)
                {
                    await CopyPrivateAsync(from, to, privacy, cancellationToken);
                    createdFiles.Add(to);
                }

                var name = await hypervisor.DefineDomainAsync(definition.Xml, cancellationToken);
                uuid = (await hypervisor.GetDomainAsync(name, cancellationToken)).Uuid;
            }

            return new RestoreResult(plan.NewName, created, definition is not null, uuid, definition?.Changes ?? []);
        }
        catch
        {
            foreach (var path in created)
            {
                try
                {
                    await hypervisor.Images.DeleteAsync(path, CancellationToken.None);
                }
                catch (HypervisorException e) when (e.Kind == HypervisorErrorKind.ImageInUse)
                {
                    // The domain was defined over it before the failure: its images stay with it; the original error is thrown.
                }
            }

            foreach (var path in createdFiles)
            {
                File.Delete(path);
            }

            throw;
        }
    }

    /// <summary>
    /// The domain XML recorded when the run was admitted, from the set's manifest (finished runs keep no XML in grain
    /// state). Read only where the set really is (no symbolic link on its path or as the manifest, under a root).
    /// </summary>
    private async Task<string> ReadManifestDomainXmlAsync(BackupRunState run, string runKey, CancellationToken cancellationToken)
    {
        const long MaxManifestBytes = 16L << 20;
        var manifest = Path.Combine(run.BackupSetPath, "manifest.json");
        string? xml = null;
        try
        {
            var real = SafeFiles.ResolveExistingPrefix(run.BackupSetPath);
            var file = new FileInfo(manifest);
            if (real == Path.TrimEndingDirectorySeparator(Path.GetFullPath(run.BackupSetPath))
                && BackupTargets.RealRootOf(real, backupOptions.Value) is not null
                && file.Exists
                && file.LinkTarget is null
                && file.Length <= MaxManifestBytes)
            {
                using var document = System.Text.Json.JsonDocument.Parse(await File.ReadAllBytesAsync(manifest, cancellationToken));
                if (document.RootElement.TryGetProperty("domain_xml", out var element) && element.ValueKind == System.Text.Json.JsonValueKind.String)
                {
                    xml = element.GetString();
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Text.Json.JsonException)
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"the manifest of run '{runKey}' ({manifest}) cannot be read: {e.Message}", field: "run");
        }

        if (string.IsNullOrWhiteSpace(xml))
        {
            // A run still active holds its XML until the manifest is written; a finished one only has the manifest.
            xml = run.DomainXml;
        }

        return string.IsNullOrWhiteSpace(xml)
            ? throw new OrchestratorException(ErrorCode.FailedPrecondition, $"the manifest of run '{runKey}' ({manifest}) holds no domain XML: the VM cannot be defined from it (restore the images without defining)", field: "run")
            : xml;
    }

    /// <summary>
    /// A requested image directory, confined like backup targets: its real path (symbolic links resolved) must be one
    /// of the original disks' directories or lie under a configured restore root (Orchestrator:Backup:RestoreRoots).
    /// </summary>
    private string RestoreDirectory(string requested, BackupRunState run)
    {
        const string Field = "image_directory";
        if (!Path.IsPathFullyQualified(requested) || requested.Contains('\0', StringComparison.Ordinal))
        {
            throw OrchestratorException.InvalidArgument(Field, "must be an absolute path without NUL characters");
        }

        var real = SafeFiles.ResolveExistingPrefix(requested);
        var own = run.Disks.Select(d => SafeFiles.ResolveExistingPrefix(Path.GetDirectoryName(d.BasePath)!));
        if (own.Contains(real, StringComparer.Ordinal)
            || backupOptions.Value.RestoreRoots.Any(root => SafeFiles.IsUnder(real, SafeFiles.ResolveExistingPrefix(root))))
        {
            return real;
        }

        throw OrchestratorException.InvalidArgument(
            Field,
            $"'{(requested.Length > 200 ? requested[..200] + "..." : requested)}' resolves to '{real}', which is neither a directory of the original disks nor under a restore root (Orchestrator:Backup:RestoreRoots)");
    }

    /// <summary>A small file (NVRAM) copied to a new file of ours: created exclusively, never through a link, private.</summary>
    private static async Task CopyPrivateAsync(string from, string to, FilePrivacy privacy, CancellationToken cancellationToken)
    {
        var content = await File.ReadAllBytesAsync(from, cancellationToken);
        using var handle = SafeFiles.CreateNew(to, privacy);
        await RandomAccess.WriteAsync(handle, content, 0, cancellationToken);
    }
}
