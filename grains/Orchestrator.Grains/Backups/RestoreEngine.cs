using System.Security.Cryptography;
using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.Backups;

/// <summary>
/// The one restore of the cluster, for one host (the one it runs on): a completed backup set becomes new disk images
/// and, on request, a new defined (and started) VM: new name, new uuid and MACs, its own files, nothing shared with
/// the original. Everything comes from the set: located by the backup layout under this host's roots, manifest
/// checked, every image copied with its format named and verified against the manifest's checksum before anything is
/// defined. Never overwrites. In two halves: <see cref="PlanAsync"/> names everything it will write and refuses what it
/// cannot do, writing nothing; <see cref="ExecuteAsync"/> writes it, all or nothing. Used by
/// <see cref="HostRestoreGrain"/> (restores) and by the VM grain's test restores (a plan whose definition is edited
/// into a throwaway VM, whose names are persisted before it is executed).
/// </summary>
internal sealed class RestoreEngine(string host, IHypervisor hypervisor, BackupOptions options)
{
    /// <summary>What a restore will write: each disk's new image and, when defining, the new VM's definition.</summary>
    internal sealed record Plan(
        RestoreRequest Request,
        BackupSetManifest Set,
        IReadOnlyDictionary<string, (string Path, string Format)> Images,
        RestoredDefinition? Definition)
    {
        /// <summary>The set's chain (a backup-job set), checked; null for an overlay or offline set.</summary>
        public BackupChain? Chain { get; init; }

        /// <summary>Every file the restore may create: images, the new VM's own files and the copies it makes.</summary>
        public IReadOnlyList<string> Files =>
            [.. Images.Values.Select(i => i.Path), .. Definition?.NewFiles ?? [], .. Definition?.FilesToCopy.Select(c => c.To) ?? []];
    }

    /// <summary>
    /// Checks the request, locates and checks the set, names the new images (refusing any that exist) and builds the
    /// new definition (refusing what it cannot make the new VM's own); writes nothing. <paramref name="editDefinition"/>
    /// changes the restored definition further (a test restore's throwaway VM: no network, its own console file).
    /// </summary>
    public async Task<Plan> PlanAsync(RestoreRequest request, Func<RestoredDefinition, RestoredDefinition>? editDefinition, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        var (source, _, _) = Validate(request, host);
        var sameHost = source == host;
        var set = BackupSetManifest.Locate(options, request.RunKey);
        // A backup-job set (full or a chain point): the chain it builds on walked from the manifests and headers alone,
        // every hop checked before anything is read or written; an incremental disk is flattened from its layers below.
        var chain = set.Level is not null ? await BackupChain.WalkAsync(set, options, hypervisor.Images, cancellationToken) : null;

        if (request.Define && (await hypervisor.ListDomainsAsync(cancellationToken)).Any(d => d.Name == request.NewName))
        {
            throw new OrchestratorException(ErrorCode.AlreadyExists, $"a VM named '{request.NewName}' already exists on host '{host}'", field: "new_name");
        }

        var directory = request.ImageDirectory is { } asked ? RestoreDirectory(asked, set, sameHost) : sameHost ? null : OtherHostDirectory(source);
        var images = new Dictionary<string, (string Path, string Format)>(StringComparer.Ordinal);
        foreach (var disk in set.Disks)
        {
            if (!await hypervisor.Images.ExistsAsync(disk.File, cancellationToken) || new FileInfo(disk.File).LinkTarget is not null)
            {
                throw new OrchestratorException(ErrorCode.FailedPrecondition, $"the backup set of run '{request.RunKey}' is incomplete: the copy of '{disk.Target}' ({disk.File}) is missing or a symbolic link", field: "key");
            }

            // Same host: beside the original disk (its real directory) unless a confined directory was asked for.
            var into = directory ?? SafeFiles.ResolveExistingPrefix(Path.GetDirectoryName(disk.Source)!);
            var path = Path.Combine(into, $"{request.NewName}-{disk.Target}.{disk.Format}");
            if (await hypervisor.Images.ExistsAsync(path, cancellationToken) || new FileInfo(path).LinkTarget is not null)
            {
                throw new OrchestratorException(ErrorCode.AlreadyExists, $"'{path}' already exists; restore never overwrites", field: "new_name");
            }

            images[disk.Target] = (path, disk.Format);
        }

        // The new definition first: what it cannot make the new VM's own is refused before anything is written. The
        // NVRAM comes from the set; only a set made before sets held it falls back to the original's file (same host).
        var definition = request.Define
            ? DomainXmlEditor.ForRestore(
                DomainXmlOf(set, request.RunKey),
                request.NewName,
                images,
                sameHost ? File.Exists : _ => false,
                set.Nvram is { } nvram ? CheckedNvram(nvram, request.RunKey) : null,
                directory is not null && !sameHost ? directory : null)
            : null;
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

        return new Plan(request, set, images, definition) { Chain = chain };
    }

    /// <summary>
    /// Copies each image (its SHA-256 compared with the manifest's), the new VM's own files, defines and (on request)
    /// starts it. All or nothing: on failure what it wrote is removed, a VM it defined undefined.
    /// </summary>
    public async Task<RestoreResult> ExecuteAsync(Plan plan, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var (request, set, images, definition) = (plan.Request, plan.Set, plan.Images, plan.Definition);
        var privacy = options.Privacy();
        var created = new List<string>();
        var createdFiles = new List<string>();
        string? defined = null;
        // Every image a flattened copy reads (the point's own and each parent's) is checked against its own set's
        // manifest before anything is written.
        foreach (var disk in set.Disks.Where(d => plan.Chain?.LayersBelow(d.Target).Count > 0))
        {
            foreach (var (layerSet, layer) in plan.Chain!.ImagesOf(disk.Target))
            {
                await BackupChain.VerifyDigestAsync(layerSet, layer, hypervisor.Images, cancellationToken);
            }
        }

        try
        {
            foreach (var disk in set.Disks)
            {
                var (path, format) = images[disk.Target];
                if (plan.Chain?.LayersBelow(disk.Target) is { Count: > 0 } layers)
                {
                    // A chain point: the image and every layer below flattened into one standalone image (qemu-img
                    // convert of a json: specification naming each layer's path and format, the bottom with no backing),
                    // so the restored VM never depends on the set. Its layers were checked above; the result is checked.
                    await hypervisor.Images.CopyAsync(disk.File, disk.Format, path, new CopyOptions { SourceBackingChain = layers, TargetFormat = format, ComputeSha256 = false, Privacy = privacy }, null, cancellationToken);
                    created.Add(path);
                    var check = await hypervisor.Images.CheckAsync(path, format, cancellationToken);
                    if (!check.Clean)
                    {
                        throw new OrchestratorException(ErrorCode.Internal, $"the flattened copy of '{disk.Target}' ({path}) failed qemu-img check: {check.Errors} errors, {check.Leaks} leaks", field: "key");
                    }

                    continue;
                }

                var copy = await hypervisor.Images.CopyAsync(disk.File, format, path, new CopyOptions { ComputeSha256 = true, Privacy = privacy }, null, cancellationToken);
                created.Add(path);
                if (!string.Equals(copy.Sha256, disk.Sha256, StringComparison.OrdinalIgnoreCase))
                {
                    throw new OrchestratorException(ErrorCode.FailedPrecondition, $"the copy of '{disk.Target}' in the backup set ({disk.File}) does not match its manifest checksum: {copy.Sha256} read, {disk.Sha256} recorded", field: "key");
                }
            }

            Guid? uuid = null;
            var running = false;
            if (definition is not null)
            {
                foreach (var (from, to) in definition.FilesToCopy)
                {
                    await CopyPrivateAsync(from, to, privacy, cancellationToken);
                    createdFiles.Add(to);
                }

                defined = await hypervisor.DefineDomainAsync(definition.Xml, cancellationToken);
                uuid = (await hypervisor.GetDomainAsync(defined, cancellationToken)).Uuid;
                if (request.Start)
                {
                    await hypervisor.StartDomainAsync(defined, cancellationToken: cancellationToken);
                    running = true;
                }
            }

            return new RestoreResult(request.NewName, created, definition is not null, uuid, definition?.Changes ?? [], host, running);
        }
        catch
        {
            // All or nothing: a VM defined by this restore (its start failed) goes with its images and files.
            if (defined is not null)
            {
                try
                {
                    await hypervisor.UndefineDomainAsync(defined, CancellationToken.None);
                }
                catch (HypervisorException)
                {
                    // Left defined (over its images, which then stay); the original error is thrown.
                }
            }

            foreach (var path in created)
            {
                try
                {
                    await hypervisor.Images.DeleteAsync(path, CancellationToken.None);
                }
                catch (HypervisorException ex) when (ex.Kind == HypervisorErrorKind.ImageInUse)
                {
                    // The domain is still defined over it: its images stay with it; the original error is thrown.
                }
            }

            foreach (var path in createdFiles)
            {
                File.Delete(path);
            }

            throw;
        }
    }

    /// <summary>The request's fields, checked here too (the server validates every field, whoever calls).</summary>
    internal static (string Source, string Vm, string RunId) Validate(RestoreRequest request, string targetHost)
    {
        var (source, vm, runId) = BackupRunKeys.Parse(request.RunKey, "key");
        GrainKeys.ValidateVmName(request.NewName, "new_name");
        if (!string.IsNullOrEmpty(request.Host))
        {
            GrainKeys.ValidateHost(request.Host, "host");
            if (request.Host != targetHost)
            {
                throw OrchestratorException.InvalidArgument("host", $"{OrchestratorException.Quote(request.Host)} is not the host this restore runs on ('{targetHost}')");
            }
        }

        if (request.Start && !request.Define)
        {
            throw OrchestratorException.InvalidArgument("start", "starting needs define: only a VM defined by the restore can be started (add --define)");
        }

        return (source, vm, runId);
    }

    private static string DomainXmlOf(BackupSetManifest set, string runKey) =>
        string.IsNullOrWhiteSpace(set.DomainXml)
            ? throw new OrchestratorException(ErrorCode.FailedPrecondition, $"the manifest of run '{runKey}' ({Path.Combine(set.SetPath, "manifest.json")}) holds no domain XML: the VM cannot be defined from it (restore the images without defining)", field: "key")
            : set.DomainXml;

    /// <summary>The set's NVRAM copy, checked against its manifest checksum before it is used.</summary>
    private static string CheckedNvram(ManifestNvram nvram, string runKey)
    {
        var file = new FileInfo(nvram.File);
        if (!file.Exists || file.LinkTarget is not null || file.Length > BackupSet.MaxNvramBytes)
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"the backup set of run '{runKey}' records an NVRAM copy, but '{nvram.File}' is missing, a symbolic link or larger than {BackupSet.MaxNvramBytes} bytes", field: "key");
        }

        var sha256 = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(nvram.File)));
        return sha256 == nvram.Sha256
            ? nvram.File
            : throw new OrchestratorException(ErrorCode.FailedPrecondition, $"the NVRAM copy of run '{runKey}' ({nvram.File}) does not match its manifest checksum: {sha256} read, {nvram.Sha256} recorded", field: "key");
    }

    /// <summary>
    /// Where a set from another host restores to: the first restore root of this host (Orchestrator:Backup:RestoreRoots),
    /// the new VM's images and its own files together. The original's directories belong to the other host.
    /// </summary>
    private string OtherHostDirectory(string source)
    {
        var root = options.RestoreRoots.FirstOrDefault()
            ?? throw new OrchestratorException(ErrorCode.FailedPrecondition, $"host '{host}' has no restore root (Orchestrator:Backup:RestoreRoots): a set made on '{source}' needs one for the new VM's images and files", field: "host");
        var real = SafeFiles.ResolveExistingPrefix(root);
        return Directory.Exists(real)
            ? real
            : throw new OrchestratorException(ErrorCode.FailedPrecondition, $"the restore root '{root}' of host '{host}' does not exist", field: "host");
    }

    /// <summary>
    /// A requested image directory, confined like backup targets: its real path (symbolic links resolved) must be one
    /// of the original disks' directories (a restore on their own host) or lie under a configured restore root
    /// (Orchestrator:Backup:RestoreRoots).
    /// </summary>
    private string RestoreDirectory(string requested, BackupSetManifest set, bool sameHost)
    {
        const string Field = "image_directory";
        if (!Path.IsPathFullyQualified(requested) || requested.Contains('\0', StringComparison.Ordinal))
        {
            throw OrchestratorException.InvalidArgument(Field, "must be an absolute path without NUL characters");
        }

        var real = SafeFiles.ResolveExistingPrefix(requested);
        var own = sameHost ? set.Disks.Select(d => SafeFiles.ResolveExistingPrefix(Path.GetDirectoryName(d.Source)!)) : [];
        if (own.Contains(real, StringComparer.Ordinal)
            || options.RestoreRoots.Any(root => SafeFiles.IsUnder(real, SafeFiles.ResolveExistingPrefix(root))))
        {
            return real;
        }

        throw OrchestratorException.InvalidArgument(
            Field,
            $"'{(requested.Length > 200 ? requested[..200] + "..." : requested)}' resolves to '{real}', which is neither a directory of the original disks on their own host nor under a restore root (Orchestrator:Backup:RestoreRoots)");
    }

    /// <summary>A small file (NVRAM) copied to a new file of ours: created exclusively, never through a link, private.</summary>
    private static async Task CopyPrivateAsync(string from, string to, FilePrivacy privacy, CancellationToken cancellationToken)
    {
        var content = await File.ReadAllBytesAsync(from, cancellationToken);
        using var handle = SafeFiles.CreateNew(to, privacy);
        await RandomAccess.WriteAsync(handle, content, 0, cancellationToken);
    }
}
