using Grpc.Core;
using Grpc.Net.Client;
using Orchestrator.Api.V1;
using Orchestrator.IntegrationTests.Infrastructure;

namespace Orchestrator.IntegrationTests.Backup;

/// <summary>
/// Backup files on a real lab host through a real silo process: planted symbolic links are refused and nothing outside
/// the roots is written; a real backup set is private (0700 directories, 0600 files).
/// </summary>
[Collection(BackupLabCollection.Name)]
public sealed class FileSafetyLabTests(BackupLabFixture fixture) : IAsyncLifetime
{
    private const string Guest = "bk-files";
    private readonly string _work = Path.Combine(Path.GetTempPath(), $"orchestrator-lab-{Guid.NewGuid():N}");
    private readonly string _clusterId = $"lab-{Guid.NewGuid():N}"[..16];

    private LabHost Lab => fixture.Lab;

    private string Outside => Path.Combine(Lab.HostDir, "outside");

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        await Lab.LabAsync("vm.sh", "delete", Lab.Name, Guest);
        foreach (var path in new[] { Path.Combine(fixture.BackupRoot, "escape"), Path.Combine(fixture.BackupRoot, Guest), Lab.DiskPath("bk-files-copy", "vda", "qcow2") })
        {
            if (new FileInfo(path).LinkTarget is not null)
            {
                File.Delete(path);
            }
        }

        foreach (var dir in new[] { _work, Outside })
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }

    [Fact]
    public async Task Backup_PlantedSymlinks_RefusedNothingWrittenOutsideAndTheSetIsPrivate()
    {
        Directory.CreateDirectory(Outside);
        await Lab.CreateGuestAsync(Guest, "qcow2:64M raw:32M");
        await using var silo = fixture.NewSilo(_work, _clusterId);
        silo.Start();
        await silo.WaitReadyAsync(TimeSpan.FromMinutes(3));
        await GrpcClients.Fleet(silo.GrpcEndpoint).WaitForVmAsync($"{Lab.Name}/{Guest}", TimeSpan.FromMinutes(2));
        var backups = new BackupService.BackupServiceClient(GrpcChannel.ForAddress(silo.GrpcEndpoint));
        var vm = $"{Lab.Name}/{Guest}";

        // A target under the root that is a link out of it.
        var escape = Path.Combine(fixture.BackupRoot, "escape");
        Directory.CreateSymbolicLink(escape, Outside);
        var target = await Assert.ThrowsAsync<RpcException>(async () => await backups.StartBackupAsync(new StartBackupRequest { Vm = vm, Target = escape }));
        Assert.Equal(StatusCode.InvalidArgument, target.StatusCode);
        Assert.Contains("symbolic link", target.Status.Detail, StringComparison.Ordinal);

        // <target>/<vm> planted as a link out of the root: refused in preflight, before any overlay.
        var vmDir = Path.Combine(fixture.BackupRoot, Guest);
        Directory.CreateSymbolicLink(vmDir, Outside);
        var planted = await Assert.ThrowsAsync<RpcException>(async () => await backups.StartBackupAsync(new StartBackupRequest { Vm = vm }));
        Assert.Equal(StatusCode.FailedPrecondition, planted.StatusCode);
        Assert.Contains("symbolic link", planted.Status.Detail, StringComparison.Ordinal);
        Assert.DoesNotContain(".orch-", await Lab.VirshAsync("domblklist", Guest), StringComparison.Ordinal);
        Assert.Empty(Directory.GetFileSystemEntries(Outside));

        // Without the link: a real backup set, private throughout.
        File.Delete(vmDir);
        var run = await BackupLabFixture.WaitForRunAsync(backups, (await backups.StartBackupAsync(new StartBackupRequest { Vm = vm })).Run.Key);
        Assert.True(run.Step == BackupStep.Completed, run.Error);
        Assert.Equal("700", await ModeAsync(vmDir));
        Assert.Equal("700", await ModeAsync(run.BackupSetPath));
        Assert.Equal("600", await ModeAsync(Path.Combine(run.BackupSetPath, "manifest.json")));
        Assert.All(run.Disks, d => Assert.Equal(run.BackupSetPath, Path.GetDirectoryName(d.BackupPath)));
        foreach (var disk in run.Disks)
        {
            Assert.Equal("600", await ModeAsync(disk.BackupPath));
        }

        Assert.Equal(["manifest.json", .. run.Disks.Select(d => Path.GetFileName(d.BackupPath)).Order()], Directory.GetFileSystemEntries(run.BackupSetPath).Select(Path.GetFileName).Order());

        // A restore whose image path is a planted link: refused, the link's target never created.
        var image = Lab.DiskPath("bk-files-copy", "vda", "qcow2");
        File.CreateSymbolicLink(image, Path.Combine(Outside, "written-through-link"));
        var restore = await Assert.ThrowsAsync<RpcException>(async () => await backups.RestoreAsync(new RestoreRequest { Key = run.Key, NewName = "bk-files-copy" }));
        Assert.Equal(StatusCode.AlreadyExists, restore.StatusCode);
        Assert.Empty(Directory.GetFileSystemEntries(Outside));

        // Restored images are private too.
        File.Delete(image);
        var restored = await backups.RestoreAsync(new RestoreRequest { Key = run.Key, NewName = "bk-files-copy" });
        try
        {
            Assert.Equal(2, restored.Images.Count);
            foreach (var path in restored.Images)
            {
                Assert.Equal("600", await ModeAsync(path));
            }
        }
        finally
        {
            foreach (var path in restored.Images)
            {
                File.Delete(path);
            }
        }
    }

    private static async Task<string> ModeAsync(string path)
    {
        var stat = await ProcessRunner.RunAsync("stat", ["-c", "%a", path]);
        Assert.True(stat.ExitCode == 0, ProcessRunner.Describe(stat));
        return stat.StandardOutput.Trim();
    }
}
