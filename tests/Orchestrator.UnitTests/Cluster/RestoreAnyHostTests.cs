using System.Text.Json;
using Orchestrator.Grains.Backups;
using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Simulated;

namespace Orchestrator.UnitTests.Cluster;

/// <summary>
/// Restore on any host (simulated): the per-host restore grain reads everything from the backup set (NVRAM included),
/// and every bad field or missing piece is refused with the field named, before anything is written.
/// </summary>
[Collection(ThreeHostClusterCollection.Name)]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class RestoreAnyHostTests(ThreeHostClusterFixture fixture) : IDisposable
{
    private readonly string _nvramDir = Path.Combine(Path.GetTempPath(), $"orchestrator-nvram-{Guid.NewGuid():N}");

    public void Dispose()
    {
        if (Directory.Exists(_nvramDir))
        {
            Directory.Delete(_nvramDir, recursive: true);
        }
    }

    [Fact]
    public async Task Backup_VmWithNvram_SetHoldsAPrivateRawCopyRecordedInTheManifest()
    {
        var (run, nvram) = await BackedUpVmWithNvramAsync("kvm-01", "rs-nvram-set");

        var copy = Path.Combine(run.BackupSetPath, BackupSetManifest.NvramFileName);
        Assert.Equal(await File.ReadAllBytesAsync(nvram), await File.ReadAllBytesAsync(copy));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(copy));
        using var manifest = JsonDocument.Parse(await File.ReadAllBytesAsync(Path.Combine(run.BackupSetPath, "manifest.json")));
        var entry = manifest.RootElement.GetProperty("nvram");
        Assert.Equal((BackupSetManifest.NvramFileName, "raw", nvram), (entry.GetProperty("file").GetString(), entry.GetProperty("format").GetString(), entry.GetProperty("source").GetString()));
        Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(await File.ReadAllBytesAsync(nvram))), entry.GetProperty("sha256").GetString());
    }

    [Fact]
    public async Task Restore_OriginalNvramGone_NewVmGetsItsOwnCopyOfTheSetsNvram()
    {
        var (run, nvram) = await BackedUpVmWithNvramAsync("kvm-01", "rs-nvram-gone");
        var content = await File.ReadAllBytesAsync(nvram);
        File.Delete(nvram); // the original's host is gone: only the set has it

        var restored = await fixture.Grains.GetGrain<IHostRestoreGrain>("kvm-01").RestoreAsync(new RestoreRequest(run.RunKey, "rs-nvram-copy", Define: true));

        var own = Path.Combine(_nvramDir, "rs-nvram-copy_VARS.fd");
        Assert.Equal(own, fixture.Hypervisors["kvm-01"].NvramOf("rs-nvram-copy"));
        Assert.Equal(content, await File.ReadAllBytesAsync(own));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(own));
        Assert.Contains($"nvram: '{nvram}' -> '{own}' (from the backup set's copy)", restored.Changes!);
    }

    [Fact]
    public async Task Restore_NvramCopyInTheSetAltered_RefusedNamingTheChecksumAndNothingMade()
    {
        var (run, _) = await BackedUpVmWithNvramAsync("kvm-01", "rs-nvram-bad");
        var copy = Path.Combine(run.BackupSetPath, BackupSetManifest.NvramFileName);
        var bytes = await File.ReadAllBytesAsync(copy);
        bytes[7] ^= 0xFF;
        await File.WriteAllBytesAsync(copy, bytes);

        var e = await Assert.ThrowsAsync<OrchestratorException>(() => fixture.Grains.GetGrain<IHostRestoreGrain>("kvm-01").RestoreAsync(new RestoreRequest(run.RunKey, "rs-nvram-bad-copy", Define: true)));

        Assert.Equal(ErrorCode.FailedPrecondition, e.Code);
        Assert.Contains("does not match its manifest checksum", e.Message, StringComparison.Ordinal);
        var hypervisor = fixture.Hypervisors["kvm-01"];
        Assert.DoesNotContain(await hypervisor.ListDomainsAsync(), d => d.Name == "rs-nvram-bad-copy");
        Assert.False(await hypervisor.Images.ExistsAsync("/var/lib/libvirt/images/rs-nvram-bad-copy-vda.qcow2"));
        Assert.False(File.Exists(Path.Combine(_nvramDir, "rs-nvram-bad-copy_VARS.fd")));
    }

    [Fact]
    public async Task Restore_SetFromAnotherHostWhoseVmItNeverSaw_DefinedAndStartedInItsRestoreRootWithItsOwnFiles()
    {
        var (run, nvram) = await BackedUpVmWithNvramAsync("kvm-01", "rs-cross");
        var source = fixture.Hypervisors["kvm-01"];
        var target = fixture.Hypervisors["kvm-02"];
        foreach (var disk in run.Disks)
        {
            source.ShareImageWith(target, disk.BackupPath); // the backup root is a mount both hosts share
        }

        var restored = await fixture.Grains.GetGrain<IHostRestoreGrain>("kvm-02").RestoreAsync(new RestoreRequest(run.RunKey, "rs-cross-b", Define: true, Host: "kvm-02", Start: true));

        var root = fixture.RestoreRoot("kvm-02");
        Assert.Equal(("kvm-02", true, true), (restored.Host, restored.Defined, restored.Started));
        Assert.Equal([Path.Combine(root, "rs-cross-b-vda.qcow2")], restored.Images);
        var domain = await target.GetDomainAsync("rs-cross-b");
        Assert.Equal(DomainPowerState.Running, domain.State);
        Assert.NotEqual((await source.GetDomainAsync("rs-cross")).Uuid, domain.Uuid);
        Assert.Equal(Path.Combine(root, "rs-cross-b_VARS.fd"), target.NvramOf("rs-cross-b"));
        Assert.Equal(await File.ReadAllBytesAsync(nvram), await File.ReadAllBytesAsync(Path.Combine(root, "rs-cross-b_VARS.fd")));
        Assert.DoesNotContain(await source.ListDomainsAsync(), d => d.Name == "rs-cross-b");
    }

    [Fact]
    public async Task Restore_AnotherHostWithoutALiveSilo_HostUnavailableNamingTheHost()
    {
        var (run, _) = await BackedUpVmWithNvramAsync("kvm-01", "rs-dead-target");

        var e = await Assert.ThrowsAsync<OrchestratorException>(() => fixture.Grains.GetGrain<IHostRestoreGrain>("kvm-99").RestoreAsync(new RestoreRequest(run.RunKey, "rs-x", Define: true, Host: "kvm-99")));

        Assert.Equal(ErrorCode.HostUnavailable, e.Code);
        Assert.Equal("kvm-99", e.Host);
        Assert.Contains("'kvm-99'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Restore_NameAlreadyDefinedOnTheTarget_AlreadyExistsNamingNewName()
    {
        var (run, _) = await BackedUpVmWithNvramAsync("kvm-01", "rs-taken");

        // db-1 is a VM of kvm-01 (the fixture's seed).
        var e = await Assert.ThrowsAsync<OrchestratorException>(() => fixture.Grains.GetGrain<IHostRestoreGrain>("kvm-01").RestoreAsync(new RestoreRequest(run.RunKey, "db-1", Define: true)));

        Assert.Equal((ErrorCode.AlreadyExists, "new_name"), (e.Code, e.Field));
        Assert.Contains("host 'kvm-01'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Restore_RunWithNoSetUnderTheRoots_NotFoundNamingKey()
    {
        var e = await Assert.ThrowsAsync<OrchestratorException>(() => fixture.Grains.GetGrain<IHostRestoreGrain>("kvm-02").RestoreAsync(new RestoreRequest("kvm-01/web-1/b-20200101-000000-abcdef", "rs-none", Define: false)));

        Assert.Equal((ErrorCode.NotFound, "key"), (e.Code, e.Field));
        Assert.Contains("web-1/b-20200101-000000-abcdef", e.Message, StringComparison.Ordinal);
    }

    public static TheoryData<string, string, string?, bool, bool, string> BadRequests => new()
    {
        // key, new name, host, define, start, field named
        { "kvm-01/web-1", "copy", null, false, false, "key" },
        { "kvm-01/web-1/../../etc", "copy", null, false, false, "key" },
        { "kvm-01/web-1/b-20200101-000000-abcdef", "../x", null, false, false, "new_name" },
        { "kvm-01/web-1/b-20200101-000000-abcdef", "copy", "kvm/02", false, false, "host" },
        { "kvm-01/web-1/b-20200101-000000-abcdef", "copy", "kvm-03", false, false, "host" },
        { "kvm-01/web-1/b-20200101-000000-abcdef", "copy", null, false, true, "start" },
    };

    [Theory]
    [MemberData(nameof(BadRequests))]
    public async Task Restore_BadField_InvalidArgumentNamingIt(string key, string name, string? host, bool define, bool start, string field)
    {
        var e = await Assert.ThrowsAsync<OrchestratorException>(() => fixture.Grains.GetGrain<IHostRestoreGrain>("kvm-02").RestoreAsync(new RestoreRequest(key, name, define, Host: host, Start: start)));

        Assert.Equal((ErrorCode.InvalidArgument, field), (e.Code, e.Field));
    }

    [Fact]
    public async Task Restore_SetManifestNamingAFileOutsideTheSet_RefusedNamingKey()
    {
        var (run, _) = await BackedUpVmWithNvramAsync("kvm-01", "rs-manifest-bad");
        var path = Path.Combine(run.BackupSetPath, "manifest.json");
        await File.WriteAllTextAsync(path, (await File.ReadAllTextAsync(path)).Replace("\"file\": \"vda.qcow2\"", "\"file\": \"../../../etc/shadow\"", StringComparison.Ordinal));

        var e = await Assert.ThrowsAsync<OrchestratorException>(() => fixture.Grains.GetGrain<IHostRestoreGrain>("kvm-01").RestoreAsync(new RestoreRequest(run.RunKey, "rs-manifest-bad-copy", Define: false)));

        Assert.Equal((ErrorCode.FailedPrecondition, "key"), (e.Code, e.Field));
        Assert.Contains("vda.qcow2", e.Message, StringComparison.Ordinal);
    }

    /// <summary>A running VM on <paramref name="host"/> with one qcow2 disk and an NVRAM file (real, 128 KiB of random bytes), backed up.</summary>
    private async Task<(BackupRunView Run, string Nvram)> BackedUpVmWithNvramAsync(string host, string name)
    {
        Directory.CreateDirectory(_nvramDir);
        var nvram = Path.Combine(_nvramDir, $"{name}_VARS.fd");
        await File.WriteAllBytesAsync(nvram, System.Security.Cryptography.RandomNumberGenerator.GetBytes(128 << 10));
        var hypervisor = fixture.Hypervisors[host];
        hypervisor.AddDomain(name, DomainPowerState.Running, [("vda", "qcow2", 1L << 30)]);
        hypervisor.SetNvram(name, nvram);
        await fixture.Grains.GetGrain<IHostGrain>(host).SyncInventoryAsync();
        var vm = fixture.Grains.GetGrain<IVirtualMachineGrain>($"{host}/{name}");
        var run = await vm.StartBackupAsync(new BackupRequest());
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!run.IsTerminal)
        {
            Assert.True(DateTime.UtcNow < deadline, $"run stuck at {run.Step}");
            run = await vm.WaitBackupAsync(run.RunKey.Split('/')[^1], run.Version, TimeSpan.FromSeconds(5));
        }

        Assert.True(run.Step == BackupStep.Completed, run.Error);
        return (run, nvram);
    }
}
