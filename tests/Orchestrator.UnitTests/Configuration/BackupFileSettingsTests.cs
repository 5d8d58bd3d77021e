using Orchestrator.Grains.Backups;
using Orchestrator.Hypervisor;
using Orchestrator.Silo.Configuration;

namespace Orchestrator.UnitTests.Configuration;

/// <summary>Orchestrator:Backup:FileGroup and RestoreRoots, checked at start with the setting named.</summary>
public sealed class BackupFileSettingsTests
{
    [Fact]
    public void Validate_UnknownFileGroup_NamesTheSetting()
    {
        var error = Assert.Single(OrchestratorSettingsValidator.Validate(new BackupOptions { FileGroup = "no-such-group-orch" }));

        Assert.Equal("Orchestrator:Backup:FileGroup: no group named 'no-such-group-orch' on this host", error);
    }

    [Fact]
    public void Privacy_KnownGroup_0750And0640WithItsId()
    {
        var options = new BackupOptions { FileGroup = "daemon" };

        Assert.Empty(OrchestratorSettingsValidator.Validate(options));
        Assert.Equal(FilePrivacy.ForGroup(SafeFiles.LookupGroup("daemon")!.Value), options.Privacy());
        Assert.Equal(FilePrivacy.Private, new BackupOptions().Privacy());
    }

    [Fact]
    public void Validate_RelativeRestoreRoot_NamesTheSetting()
    {
        var error = Assert.Single(OrchestratorSettingsValidator.Validate(new BackupOptions { RestoreRoots = ["restores"] }));

        Assert.Equal("Orchestrator:Backup:RestoreRoots:0: 'restores' is not an absolute path", error);
    }

    [Fact]
    public void Resolve_TargetThroughASymlinkOutOfTheRoot_RefusedNamingTheField()
    {
        var root = Directory.CreateTempSubdirectory("orch-root-").FullName;
        var outside = Directory.CreateTempSubdirectory("orch-out-").FullName;
        try
        {
            Directory.CreateSymbolicLink(Path.Combine(root, "link"), outside);
            var options = new BackupOptions { Roots = [root] };

            var e = Assert.Throws<OrchestratorException>(() => BackupTargets.Resolve(Path.Combine(root, "link", "host"), options));

            Assert.Equal("target", e.Field);
            Assert.Contains($"resolves through a symbolic link to '{outside}/host'", e.Message, StringComparison.Ordinal);
            Assert.Equal(Path.Combine(root, "real", "host"), BackupTargets.Resolve(Path.Combine(root, "real", "host"), options));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
            Directory.Delete(outside, recursive: true);
        }
    }

    [Fact]
    public void Resolve_RootItselfASymlink_TargetResolvedToItsRealPath()
    {
        var real = Directory.CreateTempSubdirectory("orch-realroot-").FullName;
        var link = real + "-link";
        try
        {
            Directory.CreateSymbolicLink(link, real);

            Assert.Equal(Path.Combine(real, "h"), BackupTargets.Resolve(Path.Combine(link, "h"), new BackupOptions { Roots = [link] }));
        }
        finally
        {
            Directory.Delete(link);
            Directory.Delete(real, recursive: true);
        }
    }
}
