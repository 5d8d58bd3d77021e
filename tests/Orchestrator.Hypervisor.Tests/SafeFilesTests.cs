using System.Runtime.InteropServices;
using Orchestrator.Hypervisor.QemuImg;

namespace Orchestrator.Hypervisor.Tests;

/// <summary>
/// Private modes and no write through a symbolic link, on the real file system: every planted link points at a file or
/// directory "outside" whose content and listing must stay as they were.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class SafeFilesTests : IDisposable
{
    private const UnixFileMode Mode600 = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private const UnixFileMode Mode700 = Mode600 | UnixFileMode.UserExecute;
    private readonly string _dir = Directory.CreateTempSubdirectory("orch-safefiles-").FullName;
    private readonly string _outside;
    private readonly string _victim;

    public SafeFilesTests()
    {
        _outside = Path.Combine(_dir, "outside");
        Directory.CreateDirectory(_outside);
        _victim = Path.Combine(_outside, "victim");
        File.WriteAllText(_victim, "untouched");
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Root => Directory.CreateDirectory(Path.Combine(_dir, "root")).FullName;

    [Fact]
    public void CreateNew_UmaskZero_FileIs0600()
    {
        var path = Path.Combine(_dir, "new");
        var old = umask(0);
        try
        {
            SafeFiles.CreateNew(path, FilePrivacy.Private).Dispose();
        }
        finally
        {
            _ = umask(old);
        }

        Assert.Equal(Mode600, File.GetUnixFileMode(path));
    }

    [Fact]
    public void CreateNew_GroupUnderUmask077_FileIs0640OwnedByTheGroup()
    {
        var gid = SafeFiles.LookupGroup("daemon")!.Value;
        var path = Path.Combine(_dir, "grouped");
        var old = umask(0x3f);
        try
        {
            SafeFiles.CreateNew(path, FilePrivacy.ForGroup(gid)).Dispose();
        }
        finally
        {
            _ = umask(old);
        }

        Assert.Equal(Mode600 | UnixFileMode.GroupRead, File.GetUnixFileMode(path));
        Assert.Equal(gid, StatGroup(path));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void CreateNew_SymlinkAtPath_RefusedAndNothingWrittenThrough(bool dangling)
    {
        var target = dangling ? Path.Combine(_outside, "not-there") : _victim;
        var path = Path.Combine(_dir, "planted");
        File.CreateSymbolicLink(path, target);

        var ex = Assert.Throws<HypervisorException>(() => SafeFiles.CreateNew(path, FilePrivacy.Private).Dispose());

        Assert.Equal(HypervisorErrorKind.FileExists, ex.Kind);
        Assert.Equal("untouched", File.ReadAllText(_victim));
        Assert.False(File.Exists(Path.Combine(_outside, "not-there")));
    }

    [Fact]
    public void CreateDirectories_NewTree_Each0700EvenWithUmaskZero()
    {
        var root = Root;
        var path = Path.Combine(root, "target", "vm", "run");
        var old = umask(0);
        try
        {
            SafeFiles.CreateDirectories(root, path, FilePrivacy.Private);
        }
        finally
        {
            _ = umask(old);
        }

        Assert.All(new[] { "target", "target/vm", "target/vm/run" }, d => Assert.Equal(Mode700, File.GetUnixFileMode(Path.Combine(root, d))));
    }

    [Fact]
    public void CreateDirectories_SymlinkedComponentOutOfTheRoot_RefusedAndNothingCreatedOutside()
    {
        var root = Root;
        Directory.CreateSymbolicLink(Path.Combine(root, "vm"), _outside);

        var ex = Assert.Throws<HypervisorException>(() => SafeFiles.CreateDirectories(root, Path.Combine(root, "vm", "run"), FilePrivacy.Private));

        Assert.Contains("symbolic link", ex.Message, StringComparison.Ordinal);
        Assert.Equal([_victim], Directory.GetFileSystemEntries(_outside));
    }

    [Fact]
    public async Task WriteAtomicAsync_PlantedLinksAtTheFileAndItsOldTempName_NeitherFollowed()
    {
        var set = Root;
        var manifest = Path.Combine(set, "manifest.json");
        File.CreateSymbolicLink(manifest + ".tmp", _victim);
        File.CreateSymbolicLink(manifest, _victim);

        await SafeFiles.WriteAtomicAsync(manifest, "{\"ok\":true}"u8.ToArray(), FilePrivacy.Private);

        Assert.Equal("untouched", File.ReadAllText(_victim));
        Assert.Null(new FileInfo(manifest).LinkTarget); // the link was replaced by our file
        Assert.Equal("{\"ok\":true}", File.ReadAllText(manifest));
        Assert.Equal(Mode600, File.GetUnixFileMode(manifest));
        Assert.Equal(["manifest.json", "manifest.json.tmp"], Directory.GetFileSystemEntries(set).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void DeleteTree_LinksInside_RemovesTheLinksNotTheirTargets()
    {
        var set = Root;
        Directory.CreateDirectory(Path.Combine(set, "sub"));
        File.WriteAllText(Path.Combine(set, "sub", "vda.qcow2"), "x");
        Directory.CreateSymbolicLink(Path.Combine(set, "dirlink"), _outside);
        File.CreateSymbolicLink(Path.Combine(set, "sub", "filelink"), _victim);

        Assert.True(SafeFiles.DeleteTree(set));

        Assert.False(Directory.Exists(set));
        Assert.Equal("untouched", File.ReadAllText(_victim));
        Assert.Equal([_victim], Directory.GetFileSystemEntries(_outside));
    }

    [Fact]
    public void DeleteTree_PathIsALink_DeletesNothing()
    {
        var link = Path.Combine(_dir, "set-link");
        Directory.CreateSymbolicLink(link, _outside);

        Assert.False(SafeFiles.DeleteTree(link));

        Assert.Equal([_victim], Directory.GetFileSystemEntries(_outside));
        Assert.NotNull(new FileInfo(link).LinkTarget);
    }

    [Fact]
    public void ResolveExistingPrefix_LinkInTheExistingPart_ResolvedRestKept()
    {
        var root = Root;
        Directory.CreateSymbolicLink(Path.Combine(root, "escape"), _outside);

        Assert.Equal(Path.Combine(_outside, "vm", "run"), SafeFiles.ResolveExistingPrefix(Path.Combine(root, "escape", "vm", "run")));
        Assert.Equal(Path.Combine(root, "new", "x"), SafeFiles.ResolveExistingPrefix(Path.Combine(root, "new", "x")));
    }

    [Theory]
    [InlineData(null)]
    [InlineData("qcow2")]
    public async Task CopyAsync_SymlinkedDestination_RefusedAndTargetUntouched(string? targetFormat)
    {
        var source = Path.Combine(_dir, "src.raw");
        await File.WriteAllBytesAsync(source, new byte[1024 * 1024]);
        var destination = Path.Combine(_dir, "dst.img");
        File.CreateSymbolicLink(destination, Path.Combine(_outside, "planted-target"));

        var ex = await Assert.ThrowsAsync<HypervisorException>(() => new QemuImgDiskImages().CopyAsync(source, "raw", destination, new CopyOptions { TargetFormat = targetFormat }));

        Assert.Equal(HypervisorErrorKind.FileExists, ex.Kind);
        Assert.Equal([_victim], Directory.GetFileSystemEntries(_outside));
        Assert.NotNull(new FileInfo(destination).LinkTarget);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("qcow2")]
    public async Task CopyAsync_SparseCopyAndQemuImgConvert_DestinationIs0600AndNoStagingLeft(string? targetFormat)
    {
        var source = Path.Combine(_dir, "src.raw");
        await File.WriteAllBytesAsync(source, [.. Enumerable.Repeat((byte)7, 1024 * 1024)]);
        var destination = Path.Combine(Root, "copy.img");
        var old = umask(0);
        try
        {
            await new QemuImgDiskImages().CopyAsync(source, "raw", destination, new CopyOptions { TargetFormat = targetFormat });
        }
        finally
        {
            _ = umask(old);
        }

        Assert.Equal(Mode600, File.GetUnixFileMode(destination));
        Assert.Equal(["copy.img"], Directory.GetFileSystemEntries(Path.GetDirectoryName(destination)!).Select(Path.GetFileName));
    }

    private static int StatGroup(string path)
    {
        var r = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("stat", ["-c", "%g", path]) { RedirectStandardOutput = true })!;
        var text = r.StandardOutput.ReadToEnd();
        r.WaitForExit();
        return int.Parse(text.Trim(), System.Globalization.CultureInfo.InvariantCulture);
    }

    [DllImport("libc")]
#pragma warning disable SYSLIB1054 // a test project without unsafe code: the classic import is enough for umask(2)
    private static extern int umask(int mask);
#pragma warning restore SYSLIB1054
}
