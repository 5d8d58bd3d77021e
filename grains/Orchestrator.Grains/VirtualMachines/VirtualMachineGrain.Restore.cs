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
        var (host, vm, runId) = BackupRunKeys.Parse(request.RunKey);
        if (host != Key.Host || vm != Key.Vm)
        {
            throw OrchestratorException.InvalidArgument("run", $"run '{request.RunKey}' does not belong to VM '{VmKey}'");
        }

        GrainKeys.ValidateVmName(request.NewName, "new_name");
        var run = await FindRunAsync(runId, cancellationToken);
        if (run.Step != BackupStep.Completed || !new BackupSet(run.BackupSetPath, backupOptions.Value).Exists && run.Disks.Any(d => !File.Exists(d.BackupPath)))
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"run '{request.RunKey}' is {run.Step} and has no complete backup set to restore");
        }

        if (request.Define && (await hypervisor.ListDomainsAsync(cancellationToken)).Any(d => d.Name == request.NewName))
        {
            throw new OrchestratorException(ErrorCode.AlreadyExists, $"a VM named '{request.NewName}' already exists on host '{Key.Host}'", field: "new_name");
        }

        using var activity = Telemetry.Source.StartActivity("backup.restore");
        Tag(activity, runId);
        var requested = request.ImageDirectory is null ? null : RestoreDirectory(request.ImageDirectory, run);
        var images = new Dictionary<string, (string Path, string Format)>(StringComparer.Ordinal);
        foreach (var disk in run.Disks)
        {
            // Beside the original disk (its real directory) unless a confined directory was asked for.
            var directory = requested ?? SafeFiles.ResolveExistingPrefix(Path.GetDirectoryName(disk.BasePath)!);
            var path = Path.Combine(directory, $"{request.NewName}-{disk.Target}.{disk.BackupFormat}");
            if (await hypervisor.Images.ExistsAsync(path, cancellationToken) || new FileInfo(path).LinkTarget is not null)
            {
                throw new OrchestratorException(ErrorCode.AlreadyExists, $"'{path}' already exists; restore never overwrites", field: "new_name");
            }

            images[disk.Target] = (path, disk.BackupFormat);
        }

        // The new definition first: what it cannot make the new VM's own is refused before anything is written.
        var definition = request.Define ? DomainXmlEditor.ForRestore(await ReadManifestDomainXmlAsync(run, request.RunKey, cancellationToken), request.NewName, images, File.Exists) : null;
        foreach (var file in definition?.NewFiles.Concat(definition.FilesToCopy.Select(c => c.To)) ?? [])
        {
            if (SafeFiles.Occupied(file))
            {
                throw new OrchestratorException(ErrorCode.AlreadyExists, $"'{file}' (the restored VM's own file) already exists; restore never writes into a file that is not its own", field: "new_name");
            }
        }

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

            return new RestoreResult(request.NewName, created, request.Define, uuid, definition?.Changes ?? []);
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
        var set = new BackupSet(run.BackupSetPath, backupOptions.Value);
        var manifest = set.ManifestPath;
        string? xml;
        try
        {
            xml = await set.ReadManifestDomainXmlAsync(cancellationToken);
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
