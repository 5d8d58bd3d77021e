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
        var run = FindRun(runId);
        if (run.Step != BackupStep.Completed || !Directory.Exists(run.BackupSetPath) && run.Disks.Any(d => !File.Exists(d.BackupPath)))
        {
            throw new OrchestratorException(ErrorCode.FailedPrecondition, $"run '{request.RunKey}' is {run.Step} and has no complete backup set to restore");
        }

        if (request.Define && (await hypervisor.ListDomainsAsync(cancellationToken)).Any(d => d.Name == request.NewName))
        {
            throw new OrchestratorException(ErrorCode.AlreadyExists, $"a VM named '{request.NewName}' already exists on host '{Key.Host}'", field: "new_name");
        }

        using var activity = Telemetry.Source.StartActivity("backup.restore");
        Tag(activity, runId);
        var images = new Dictionary<string, (string Path, string Format)>(StringComparer.Ordinal);
        foreach (var disk in run.Disks)
        {
            var directory = request.ImageDirectory ?? Path.GetDirectoryName(disk.BasePath)!;
            var path = Path.Combine(directory, $"{request.NewName}-{disk.Target}.{disk.BackupFormat}");
            if (await hypervisor.Images.ExistsAsync(path, cancellationToken))
            {
                throw new OrchestratorException(ErrorCode.AlreadyExists, $"'{path}' already exists; restore never overwrites", field: "new_name");
            }

            images[disk.Target] = (path, disk.BackupFormat);
        }

        var created = new List<string>();
        try
        {
            foreach (var disk in run.Disks)
            {
                var (path, _) = images[disk.Target];
                var copy = await hypervisor.Images.CopyAsync(disk.BackupPath, disk.BackupFormat, path, new CopyOptions { ComputeSha256 = disk.Sha256 is not null }, null, cancellationToken);
                created.Add(path);
                if (disk.Sha256 is not null && !string.Equals(copy.Sha256, disk.Sha256, StringComparison.OrdinalIgnoreCase))
                {
                    throw new OrchestratorException(ErrorCode.Internal, $"backup image of '{disk.Target}' does not match its manifest checksum");
                }
            }

            Guid? uuid = null;
            if (request.Define)
            {
                var name = await hypervisor.DefineDomainAsync(DomainXmlEditor.ForRestore(run.DomainXml, request.NewName, images), cancellationToken);
                uuid = (await hypervisor.GetDomainAsync(name, cancellationToken)).Uuid;
            }

            return new RestoreResult(request.NewName, created, request.Define, uuid);
        }
        catch
        {
            foreach (var path in created)
            {
                await hypervisor.Images.DeleteAsync(path, CancellationToken.None);
            }

            throw;
        }
    }
}
