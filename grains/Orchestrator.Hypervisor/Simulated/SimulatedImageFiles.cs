using System.Buffers.Binary;
using System.Text;

namespace Orchestrator.Hypervisor.Simulated;

/// <summary>
/// The files behind a simulated host's images when <see cref="SimulatedOptions.WriteImageFiles"/> is on: every image
/// exists on disk, sparse, as long as the simulated host says it is. A raw image is a file of its virtual size (all
/// holes). A qcow2 image is a valid, empty qcow2 (version 3, 64 KiB clusters) that names its virtual size and, for a
/// layer of a chain, its backing file and that file's format, so <c>qemu-img info -f qcow2</c> shows the chain the
/// simulated host reports; the file is then extended (a hole) to the simulated allocation. The guest data is not
/// simulated: every image reads as zeros. Files are created with the caller's privacy (default 0600) without following a link; missing directories are
/// created 0700.
/// </summary>
internal static class SimulatedImageFiles
{
    private const int ClusterBits = 16;
    private const long ClusterSize = 1L << ClusterBits;
    private const uint BackingFormatExtension = 0xE2792ACA;

    public static void Write(string path, string format, long virtualSize, long fileLength, string? backingFile, string? backingFormat, FilePrivacy privacy)
    {
        var directory = Path.GetDirectoryName(path) ?? throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"'{path}' has no directory");
        if (!Directory.Exists(directory))
        {
            var existing = directory;
            while (!Directory.Exists(existing))
            {
                existing = Path.GetDirectoryName(existing) ?? "/";
            }

            SafeFiles.CreateDirectories(existing, directory, FilePrivacy.Private);
        }

        Delete(path); // the simulated host owns its paths: a file of an earlier run is replaced, a link only unlinked
        using var handle = SafeFiles.CreateNew(path, privacy);
        var header = format == "qcow2" ? Qcow2(virtualSize, backingFile, backingFormat) : [];
        if (header.Length > 0)
        {
            RandomAccess.Write(handle, header, 0);
        }

        RandomAccess.SetLength(handle, Math.Max(header.Length, format == "qcow2" ? fileLength : virtualSize));
    }

    /// <summary>Removes the file (a symbolic link is removed, never followed); nothing there is fine.</summary>
    public static void Delete(string path)
    {
        var info = new FileInfo(path);
        if (info.Exists || info.LinkTarget is not null)
        {
            info.Delete();
        }
    }

    /// <summary>
    /// An empty qcow2 v3 image: header (cluster 0, with the backing format extension and the backing file name),
    /// refcount table (cluster 1), refcount block (cluster 2), an all-zero L1 table (cluster 3 on).
    /// </summary>
    internal static byte[] Qcow2(long virtualSize, string? backingFile, string? backingFormat)
    {
        var l2Entries = ClusterSize / 8;
        var l1Size = (virtualSize + (ClusterSize * l2Entries) - 1) / (ClusterSize * l2Entries);
        var l1Clusters = Math.Max(1, ((l1Size * 8) + ClusterSize - 1) / ClusterSize);
        var clusters = 3 + l1Clusters;
        if (clusters > ClusterSize / 2)
        {
            throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"a simulated qcow2 image of {virtualSize} bytes is too large");
        }

        var image = new byte[(3 * ClusterSize) + (l1Size * 8)];
        var h = image.AsSpan();
        BinaryPrimitives.WriteUInt32BigEndian(h[0..], 0x514649FB); // "QFI\xfb"
        BinaryPrimitives.WriteUInt32BigEndian(h[4..], 3);
        BinaryPrimitives.WriteUInt32BigEndian(h[20..], ClusterBits);
        BinaryPrimitives.WriteUInt64BigEndian(h[24..], (ulong)virtualSize);
        BinaryPrimitives.WriteUInt32BigEndian(h[36..], (uint)l1Size);
        BinaryPrimitives.WriteUInt64BigEndian(h[40..], 3 * ClusterSize);
        BinaryPrimitives.WriteUInt64BigEndian(h[48..], ClusterSize);
        BinaryPrimitives.WriteUInt32BigEndian(h[56..], 1);
        BinaryPrimitives.WriteUInt32BigEndian(h[96..], 4); // 16-bit refcounts
        BinaryPrimitives.WriteUInt32BigEndian(h[100..], 104);

        var at = 104;
        if (backingFile is not null)
        {
            var formatName = Encoding.ASCII.GetBytes(backingFormat ?? throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"the format of '{backingFile}' must be named"));
            BinaryPrimitives.WriteUInt32BigEndian(h[at..], BackingFormatExtension);
            BinaryPrimitives.WriteUInt32BigEndian(h[(at + 4)..], (uint)formatName.Length);
            formatName.CopyTo(h[(at + 8)..]);
            at += 8 + ((formatName.Length + 7) & ~7);
        }

        at += 8; // end of the header extensions: type 0, length 0
        if (backingFile is not null)
        {
            var name = Encoding.UTF8.GetBytes(backingFile);
            if (at + name.Length > ClusterSize || name.Length > 1023)
            {
                throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"backing file name too long: '{backingFile}'");
            }

            BinaryPrimitives.WriteUInt64BigEndian(h[8..], (ulong)at);
            BinaryPrimitives.WriteUInt32BigEndian(h[16..], (uint)name.Length);
            name.CopyTo(h[at..]);
        }

        BinaryPrimitives.WriteUInt64BigEndian(h[(int)ClusterSize..], (ulong)(2 * ClusterSize)); // refcount table[0] -> block
        for (var cluster = 0; cluster < clusters; cluster++)
        {
            BinaryPrimitives.WriteUInt16BigEndian(h[(int)((2 * ClusterSize) + (cluster * 2))..], 1);
        }

        return image;
    }
}
