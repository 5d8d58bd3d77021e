using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Orchestrator.Hypervisor;

/// <summary>
/// Who may read what the orchestrator writes (backup sets, restored images): by default the owner only (directories
/// 0700, files 0600); with a group, that group may read too (0750 / 0640, group set on creation).
/// </summary>
public sealed record FilePrivacy(UnixFileMode DirectoryMode, UnixFileMode FileMode, int GroupId = -1)
{
    private const UnixFileMode OwnerFile = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private const UnixFileMode OwnerDirectory = OwnerFile | UnixFileMode.UserExecute;

    /// <summary>0700 directories, 0600 files, group unchanged.</summary>
    public static FilePrivacy Private { get; } = new(OwnerDirectory, OwnerFile);

    /// <summary>0750 directories, 0640 files, owned by the group <paramref name="groupId"/>.</summary>
    public static FilePrivacy ForGroup(int groupId) =>
        new(OwnerDirectory | UnixFileMode.GroupRead | UnixFileMode.GroupExecute, OwnerFile | UnixFileMode.GroupRead, groupId);
}

/// <summary>
/// File system writes that never follow a symbolic link and create with the final mode (umask-independent: the mode
/// is given to open/mkdir, which can only narrow it, and set exactly on the new descriptor before any data is
/// written). Linux only, like the rest of the hypervisor layer.
/// </summary>
public static partial class SafeFiles
{
    private const int ORdOnly = 0;
    private const int ORdWr = 2;
    private const int OCreat = 0x40;
    private const int OExcl = 0x80;
    private const int OCloExec = 0x80000;
    private const int EExist = 17;
    private const int ENotDir = 20;
    private const int ELoop = 40;
    private const int AtRemoveDir = 0x200;

    // These two differ between architectures (asm-generic vs. x86).
    private static readonly int ODirectory = RuntimeInformation.ProcessArchitecture is Architecture.Arm64 or Architecture.Arm ? 0x4000 : 0x10000;
    private static readonly int ONoFollow = RuntimeInformation.ProcessArchitecture is Architecture.Arm64 or Architecture.Arm ? 0x8000 : 0x20000;

    /// <summary>Whether anything is at <paramref name="path"/>: a file, a directory, or a symbolic link (dangling or not).</summary>
    public static bool Occupied(string path) =>
        File.Exists(path) || Directory.Exists(path) || new FileInfo(path).LinkTarget is not null;

    /// <summary>
    /// The real path of <paramref name="path"/>: the longest prefix that exists, with every symbolic link in it
    /// resolved, followed by the rest (which does not exist yet, so cannot be a link). The path must be absolute.
    /// </summary>
    public static string ResolveExistingPrefix(string path)
    {
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        var rest = new Stack<string>();
        var prefix = full;
        while (true)
        {
            var real = RealPath(prefix);
            if (real is not null)
            {
                return rest.Count == 0 ? real : Path.Combine([real, .. rest]);
            }

            var parent = Path.GetDirectoryName(prefix);
            if (parent is null)
            {
                return full;
            }

            rest.Push(Path.GetFileName(prefix));
            prefix = parent;
        }
    }

    /// <summary>True when <paramref name="path"/> is <paramref name="root"/> or lies below it (both already real paths).</summary>
    public static bool IsUnder(string path, string root)
    {
        path = Path.TrimEndingDirectorySeparator(path);
        root = Path.TrimEndingDirectorySeparator(root);
        return path == root || path.StartsWith(root == "/" ? "/" : root + "/", StringComparison.Ordinal);
    }

    /// <summary>
    /// Creates every missing directory from <paramref name="root"/> (which must exist) down to <paramref name="path"/>
    /// with the privacy's mode and group; an existing component must be a real directory. Walks with openat and
    /// O_NOFOLLOW from the root, so a symbolic link anywhere below the root is refused, never followed.
    /// </summary>
    public static void CreateDirectories(string root, string path, FilePrivacy privacy)
    {
        ArgumentNullException.ThrowIfNull(privacy);
        root = Path.TrimEndingDirectorySeparator(Path.GetFullPath(root));
        path = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        if (!IsUnder(path, root))
        {
            throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"{path} is not under {root}");
        }

        var fd = open(root, ORdOnly | ODirectory | OCloExec, 0);
        if (fd < 0)
        {
            throw Failed("open", root);
        }

        try
        {
            var relative = path.Length == root.Length ? string.Empty : path[(root == "/" ? 1 : root.Length + 1)..];
            var current = root;
            foreach (var name in relative.Split('/', StringSplitOptions.RemoveEmptyEntries))
            {
                current = Path.Combine(current, name);
                var created = mkdirat(fd, name, (int)privacy.DirectoryMode) == 0;
                if (!created && Marshal.GetLastPInvokeError() != EExist)
                {
                    throw Failed("mkdir", current);
                }

                var next = openat(fd, name, ORdOnly | ODirectory | ONoFollow | OCloExec, 0);
                if (next < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    throw errno is ELoop or ENotDir
                        ? new HypervisorException(HypervisorErrorKind.InvalidArgument, $"{current} is a symbolic link or not a directory; refusing to write through it")
                        : Failed("open", current, errno);
                }

                _ = close(fd);
                fd = next;
                if (created)
                {
                    Apply(fd, privacy.DirectoryMode, privacy.GroupId, current);
                }
            }
        }
        finally
        {
            _ = close(fd);
        }
    }

    /// <summary>
    /// Creates a new file (O_CREAT|O_EXCL|O_NOFOLLOW: an existing path, a symbolic link included, is refused) with the
    /// privacy's mode and group set before anything is written.
    /// </summary>
    public static SafeFileHandle CreateNew(string path, FilePrivacy privacy)
    {
        ArgumentNullException.ThrowIfNull(privacy);
        var fd = open(path, ORdWr | OCreat | OExcl | ONoFollow | OCloExec, (int)privacy.FileMode);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw errno is EExist or ELoop
                ? new HypervisorException(HypervisorErrorKind.FileExists, $"{path} exists already (or is a symbolic link); refusing to overwrite it")
                : Failed("create", path, errno);
        }

        var handle = new SafeFileHandle(fd, ownsHandle: true);
        try
        {
            Apply(fd, privacy.FileMode, privacy.GroupId, path);
            return handle;
        }
        catch
        {
            handle.Dispose();
            _ = unlink(path);
            throw;
        }
    }

    /// <summary>
    /// Replaces <paramref name="path"/> with <paramref name="content"/> atomically: written to a new file of a random
    /// name beside it (created as by <see cref="CreateNew"/>), fsynced, then renamed over it. rename replaces a symbolic
    /// link at the destination rather than following it.
    /// </summary>
    public static async Task WriteAtomicAsync(string path, ReadOnlyMemory<byte> content, FilePrivacy privacy, CancellationToken cancellationToken = default)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        var temp = Path.Combine(directory, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var handle = CreateNew(temp, privacy))
            {
                await RandomAccess.WriteAsync(handle, content, 0, cancellationToken).ConfigureAwait(false);
                if (fsync((int)handle.DangerousGetHandle()) != 0)
                {
                    throw Failed("fsync", temp);
                }
            }

            if (rename(temp, path) != 0)
            {
                throw Failed("rename", path);
            }
        }
        catch
        {
            _ = unlink(temp);
            throw;
        }
    }

    /// <summary>
    /// Makes the entries of a directory durable (the names of files created or renamed in it): fsync of the directory,
    /// opened read-only without following a link. A file's own fsync does not cover its name.
    /// </summary>
    public static void SyncDirectory(string path)
    {
        var fd = open(path, ORdOnly | ODirectory | ONoFollow | OCloExec, 0);
        if (fd < 0)
        {
            throw Failed("open", path);
        }

        try
        {
            if (fsync(fd) != 0)
            {
                throw Failed("fsync", path);
            }
        }
        finally
        {
            _ = close(fd);
        }
    }

    /// <summary>Sets the privacy's file mode and group on a file another process wrote (opened without following a link).</summary>
    public static void Restrict(string path, FilePrivacy privacy)
    {
        ArgumentNullException.ThrowIfNull(privacy);
        var fd = open(path, ORdOnly | ONoFollow | OCloExec, 0);
        if (fd < 0)
        {
            throw Failed("open", path);
        }

        try
        {
            Apply(fd, privacy.FileMode, privacy.GroupId, path);
        }
        finally
        {
            _ = close(fd);
        }
    }

    /// <summary>
    /// A new private directory beside <paramref name="destination"/> (0700, random name) for a tool that writes by
    /// path (qemu-img convert): the file it creates there is reachable by nobody else until <see cref="PublishStaged"/>
    /// links it to <paramref name="destination"/>.
    /// </summary>
    public static string CreateStagingDirectory(string destination)
    {
        var full = Path.GetFullPath(destination);
        var staging = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.staging");
        if (mkdir(staging, (int)FilePrivacy.Private.DirectoryMode) != 0)
        {
            throw Failed("mkdir", staging);
        }

        return staging;
    }

    /// <summary>
    /// Gives <paramref name="staged"/> its final mode and group, then links it to <paramref name="destination"/>
    /// (link fails on any existing path, a symbolic link included) and removes the staging directory.
    /// </summary>
    public static void PublishStaged(string staged, string destination, FilePrivacy privacy)
    {
        Restrict(staged, privacy);
        if (link(staged, destination) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw errno == EExist
                ? new HypervisorException(HypervisorErrorKind.FileExists, $"{destination} exists already (or is a symbolic link); refusing to overwrite it")
                : Failed("link", destination, errno);
        }

        RemoveStaging(staged);
    }

    /// <summary>Removes a staged file (if any) and its staging directory.</summary>
    public static void RemoveStaging(string staged)
    {
        _ = unlink(staged);
        _ = rmdir(Path.GetDirectoryName(staged)!);
    }

    /// <summary>
    /// Deletes a directory tree without following any symbolic link: links inside are removed, never their targets;
    /// <paramref name="path"/> itself must be a real directory. Returns false (deleting nothing) when it is a link.
    /// </summary>
    public static bool DeleteTree(string path)
    {
        var fd = open(path, ORdOnly | ODirectory | ONoFollow | OCloExec, 0);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            return errno is ELoop or ENotDir ? false : errno == 2 ? true : throw Failed("open", path, errno);
        }

        _ = close(fd);
        foreach (var entry in new DirectoryInfo(path).EnumerateFileSystemInfos())
        {
            // FileSystemInfo attributes come from lstat: a link to a directory is a ReparsePoint, never descended into.
            if (entry.Attributes.HasFlag(FileAttributes.Directory) && !entry.Attributes.HasFlag(FileAttributes.ReparsePoint))
            {
                DeleteTree(entry.FullName);
            }
            else if (unlink(entry.FullName) != 0 && Marshal.GetLastPInvokeError() != 2)
            {
                throw Failed("unlink", entry.FullName);
            }
        }

        if (rmdir(path) != 0 && Marshal.GetLastPInvokeError() != 2)
        {
            throw Failed("rmdir", path);
        }

        return true;
    }

    /// <summary>The group id of a group name or number; null when no such group exists.</summary>
    public static int? LookupGroup(string group)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(group);
        if (int.TryParse(group, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var gid))
        {
            return gid;
        }

        // struct group { char *gr_name; char *gr_passwd; gid_t gr_gid; ... }
        var entry = getgrnam(group);
        return entry == IntPtr.Zero ? null : Marshal.ReadInt32(entry, 2 * IntPtr.Size);
    }

    private static void Apply(int fd, UnixFileMode mode, int groupId, string path)
    {
        if (groupId >= 0 && fchown(fd, -1, groupId) != 0)
        {
            throw Failed("chown", path);
        }

        // After chown (which may clear set-id bits); exact, whatever the umask took away.
        if (fchmod(fd, (int)mode) != 0)
        {
            throw Failed("chmod", path);
        }
    }

    /// <summary>realpath(3): the canonical absolute path with every symbolic link resolved, or null when it cannot be resolved.</summary>
    internal static string? RealPath(string path)
    {
        var result = realpath(path, IntPtr.Zero);
        if (result == IntPtr.Zero)
        {
            return null;
        }

        try
        {
            return Marshal.PtrToStringUTF8(result);
        }
        finally
        {
            unsafe
            {
                NativeMemory.Free((void*)result); // malloc'ed by realpath
            }
        }
    }

    private static IOException Failed(string operation, string path, int? errno = null)
    {
        var code = errno ?? Marshal.GetLastPInvokeError();
        return new IOException($"{operation} {path} failed: {Marshal.GetPInvokeErrorMessage(code)} (errno {code})");
    }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int open(string path, int flags, int mode);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int openat(int dirfd, string path, int flags, int mode);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int mkdirat(int dirfd, string path, int mode);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int mkdir(string path, int mode);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int rmdir(string path);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int unlink(string path);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int rename(string from, string to);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int link(string from, string to);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial IntPtr realpath(string path, IntPtr resolved);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial IntPtr getgrnam(string name);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fchmod(int fd, int mode);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fchown(int fd, int owner, int group);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fsync(int fd);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int close(int fd);
}
