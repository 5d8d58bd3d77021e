using System.Diagnostics;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.Json;
using Orchestrator.Hypervisor.QemuImg;

namespace Orchestrator.Hypervisor.Tests;

/// <summary>
/// qemu-img never guesses: every call names every image's format, opens no backing file a header names unless the
/// caller named it, and runs within a time bound. Real qemu-img (tests/lab/install.sh), behind a recording wrapper.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class QemuImgSafetyTests : IDisposable
{
    private const long MiB = 1024 * 1024;
    private readonly string _dir = Directory.CreateTempSubdirectory("orch-qemuimg-safety-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task EveryCall_RecordedArguments_NameEveryFormatAndNoBackingIsLeftToTheHeader()
    {
        var (images, log) = RecordingImages();
        var template = Path.Combine(_dir, "template.qcow2");
        var clone = Path.Combine(_dir, "clone.qcow2");
        var overlay = Path.Combine(_dir, "overlay.qcow2");
        await images.CreateAsync(template, "qcow2", 8 * MiB);
        await QemuIoAsync(template, "qcow2", "write -P 0x11 0 1M");
        await images.CreateAsync(clone, "qcow2", 0, template, "qcow2");
        await QemuIoAsync(clone, "qcow2", "write -P 0x22 1M 1M");
        await images.CreateAsync(overlay, "qcow2", 0, clone, "qcow2");
        await QemuIoAsync(overlay, "qcow2", "write -P 0x33 2M 1M");
        var templateSha = await Sha256Async(template);

        await images.InfoAsync(clone, "qcow2");
        await images.ListSnapshotsAsync(clone, "qcow2");
        var flat = Path.Combine(_dir, "flat.qcow2");
        await images.CopyAsync(clone, "qcow2", flat, new CopyOptions { SourceBackingChain = [new DiskLayer(template, "qcow2")] });
        await images.CheckAsync(flat, "qcow2");
        await images.CommitAsync(overlay, [new DiskLayer(clone, "qcow2"), new DiskLayer(template, "qcow2")]);

        var calls = ReadCalls(log);
        Assert.Equal(["create", "create", "create", "info", "info", "convert", "check", "commit"], calls.Select(c => c[0]));
        foreach (var call in calls)
        {
            var f = call.IndexOf("-f");
            Assert.True(f > 0 && call[f + 1] is "raw" or "qcow2", $"no -f in: {string.Join(' ', call)}");
            if (call.Contains("-b"))
            {
                Assert.True(call[0] == "commit" || call[call.IndexOf("-F") + 1] == "qcow2", $"a backing file without -F: {string.Join(' ', call)}");
            }

            foreach (var spec in call.Where(a => a.StartsWith("json:", StringComparison.Ordinal)))
            {
                AssertEveryLayerNamed(spec);
            }
        }

        // commit -b: into the clone only; the template is byte-identical and the clone holds the overlay's data.
        var commit = calls.Single(c => c[0] == "commit");
        Assert.Equal(clone, commit[commit.IndexOf("-b") + 1]);
        Assert.Equal(templateSha, await Sha256Async(template));
        await QemuIoAsync(clone, "qcow2", "read -P 0x33 2M 1M", readOnly: true);

        // The flattened copy stands alone and holds every layer's data.
        var flatInfo = await images.InfoAsync(flat, "qcow2");
        Assert.Null(flatInfo.BackingFile);
        await QemuIoAsync(flat, "qcow2", "read -P 0x11 0 1M", readOnly: true);
        await QemuIoAsync(flat, "qcow2", "read -P 0x22 1M 1M", readOnly: true);
    }

    [Fact]
    public async Task CheckInfoListCopy_RawDiskHoldingAGuestWrittenQcow2Header_NeverOpenTheBackingItNames()
    {
        // A FIFO as the named backing file: anything that opens it blocks (and the bound would fire), and a writer
        // waiting on it wakes up only if someone opened it for reading.
        var fifo = Path.Combine(_dir, "trap.fifo");
        await RunAsync("mkfifo", "-m", "600", fifo);
        var socketPath = Path.Combine(_dir, "nbd.sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(socketPath));
        listener.Listen(4);
        var accepted = listener.AcceptAsync();

        var images = new QemuImgDiskImages(timeouts: new QemuImgTimeouts { Info = TimeSpan.FromSeconds(20), Check = TimeSpan.FromSeconds(20), Convert = TimeSpan.FromSeconds(20) });
        foreach (var backing in new[] { fifo, $"nbd+unix:///export?socket={socketPath}" })
        {
            var raw = await HostileRawDiskAsync($"hostile-{(backing == fifo ? "file" : "nbd")}.raw", backing);
            var readers = FifoReaderProbe(fifo);

            var info = await images.InfoAsync(raw, "raw");
            var check = await images.CheckAsync(raw, "raw");
            var snapshots = await images.ListSnapshotsAsync(raw, "raw");
            var copy = raw + ".copy";
            await images.CopyAsync(raw, "raw", copy, new CopyOptions());
            var copyCheck = await images.CheckAsync(copy, "raw");

            Assert.Equal(("raw", null), (info.Format, info.BackingFile));
            Assert.True(check.Clean && copyCheck.Clean);
            Assert.Empty(snapshots);
            Assert.Equal(await Sha256Async(raw), await Sha256Async(copy));
            Assert.False(readers.IsCompleted, "the FIFO named by the guest's header was opened");
            await ReleaseAsync(fifo, readers);
        }

        await Task.Delay(200);
        Assert.False(accepted.IsCompleted, "a connection arrived on the socket named by the guest's header");
    }

    [Fact]
    public async Task CheckAsync_Qcow2CopyWhoseHeaderNamesABackingFile_ChecksItWithoutOpeningIt()
    {
        var fifo = Path.Combine(_dir, "backing.fifo");
        await RunAsync("mkfifo", "-m", "600", fifo);
        var copy = Path.Combine(_dir, "copy.qcow2");
        await RunAsync("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", fifo, "-F", "raw", copy, "8M");
        var readers = FifoReaderProbe(fifo);
        var images = new QemuImgDiskImages(timeouts: new QemuImgTimeouts { Check = TimeSpan.FromSeconds(20) });

        var check = await images.CheckAsync(copy, "qcow2");

        Assert.True(check.Clean, check.Output);
        Assert.False(readers.IsCompleted, "qemu-img check opened the backing file");
        await ReleaseAsync(fifo, readers);
    }

    [Fact]
    public async Task Calls_FormatMissingOrUnknown_RefusedBeforeQemuImgRuns()
    {
        var (images, log) = RecordingImages();
        var path = Path.Combine(_dir, "any.raw");
        await File.WriteAllBytesAsync(path, new byte[4096]);

        var info = await Assert.ThrowsAsync<HypervisorException>(() => images.InfoAsync(path, "vmdk"));
        var create = await Assert.ThrowsAsync<HypervisorException>(() => images.CreateAsync(Path.Combine(_dir, "o.qcow2"), "qcow2", 0, path, null));

        Assert.Equal(HypervisorErrorKind.InvalidArgument, info.Kind);
        Assert.Contains("backingFormat", create.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(log));
    }

    [Fact]
    public async Task InfoAsync_QemuImgHangs_KilledAtItsBoundWithATimeoutError()
    {
        var pidFile = Path.Combine(_dir, "hung.pid");
        var script = Path.Combine(_dir, "hung-qemu-img");
        await File.WriteAllTextAsync(script, $"#!/bin/sh\necho $$ > '{pidFile}'\nexec sleep 60\n");
        File.SetUnixFileMode(script, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var path = Path.Combine(_dir, "image.raw");
        await File.WriteAllBytesAsync(path, new byte[4096]);
        var images = new QemuImgDiskImages(qemuImgPath: script, timeouts: new QemuImgTimeouts { Info = TimeSpan.FromSeconds(1) });
        var sw = Stopwatch.StartNew();

        var e = await Assert.ThrowsAsync<HypervisorException>(() => images.InfoAsync(path, "raw"));

        Assert.Equal(HypervisorErrorKind.Timeout, e.Kind);
        Assert.Contains("info", e.Message, StringComparison.Ordinal);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(15), $"took {sw.Elapsed}");
        var pid = int.Parse((await File.ReadAllTextAsync(pidFile)).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        Assert.False(Directory.Exists($"/proc/{pid}") && !File.ReadAllText($"/proc/{pid}/stat").Contains(") Z ", StringComparison.Ordinal), "the hung process is still alive");
    }

    [Fact]
    public async Task CopyAsync_ConvertOverItsBound_KilledAndPartialOutputRemoved()
    {
        var script = Path.Combine(_dir, "slow-qemu-img");
        await File.WriteAllTextAsync(script, "#!/bin/sh\nfor last; do :; done\n: > \"$last\"\nexec sleep 60\n");
        File.SetUnixFileMode(script, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var source = Path.Combine(_dir, "src.raw");
        await File.WriteAllBytesAsync(source, new byte[65536]);
        var destination = Path.Combine(_dir, "dst.qcow2");
        var images = new QemuImgDiskImages(qemuImgPath: script, timeouts: new QemuImgTimeouts { Convert = TimeSpan.FromSeconds(1) });

        var e = await Assert.ThrowsAsync<HypervisorException>(() => images.CopyAsync(source, "raw", destination, new CopyOptions { TargetFormat = "qcow2" }));

        Assert.Equal(HypervisorErrorKind.Timeout, e.Kind);
        Assert.False(File.Exists(destination));
    }

    /// <summary>A raw disk whose first bytes are a qcow2 header naming <paramref name="backing"/>: what a guest can write.</summary>
    private async Task<string> HostileRawDiskAsync(string name, string backing)
    {
        var header = Path.Combine(_dir, name + ".header.qcow2");
        await RunAsync("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", "raw", header, "16M");
        var raw = Path.Combine(_dir, name);
        await using (var f = new FileStream(raw, FileMode.CreateNew, FileAccess.Write))
        {
            f.SetLength(16 * MiB);
            await f.WriteAsync(await File.ReadAllBytesAsync(header));
            f.Position = 8 * MiB;
            await f.WriteAsync(RandomNumberGenerator.GetBytes(4096));
        }

        File.Delete(header);

        // The bytes really are a qcow2 image naming that backing file: a probe would follow it.
        var probe = await RunAsync("qemu-img", "info", "-U", "--output=json", "-f", "qcow2", raw);
        Assert.Contains(backing.Replace("/", "\\/", StringComparison.Ordinal), probe.Replace("/", "\\/", StringComparison.Ordinal), StringComparison.Ordinal);
        return raw;
    }

    private (QemuImgDiskImages Images, string Log) RecordingImages()
    {
        var log = Path.Combine(_dir, "calls.log");
        var script = Path.Combine(_dir, "recording-qemu-img");
        File.WriteAllText(script, $"#!/bin/sh\n{{ for a in \"$@\"; do printf '%s\\036' \"$a\"; done; printf '\\n'; }} >> '{log}'\nexec qemu-img \"$@\"\n");
        File.SetUnixFileMode(script, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return (new QemuImgDiskImages(qemuImgPath: script), log);
    }

    private static List<List<string>> ReadCalls(string log) =>
        [.. File.ReadAllLines(log).Where(l => l.Length > 0).Select(l => l.TrimEnd('\u001e').Split('\u001e').ToList())];

    /// <summary>Each layer of a json: specification has a driver and a file, and the bottom one has backing null.</summary>
    private static void AssertEveryLayerNamed(string spec)
    {
        using var json = JsonDocument.Parse(spec["json:".Length..]);
        var layer = json.RootElement;
        while (true)
        {
            Assert.True(layer.GetProperty("driver").GetString() is "raw" or "qcow2", spec);
            Assert.Equal("file", layer.GetProperty("file").GetProperty("driver").GetString());
            var backing = layer.GetProperty("backing");
            if (backing.ValueKind == JsonValueKind.Null)
            {
                return;
            }

            layer = backing;
        }
    }

    /// <summary>Completes when some process opens the FIFO for reading.</summary>
    private static Task FifoReaderProbe(string fifo) =>
        Task.Factory.StartNew(
            () =>
            {
                using var writer = new FileStream(fifo, FileMode.Open, FileAccess.Write);
            },
            CancellationToken.None,
            TaskCreationOptions.LongRunning,
            TaskScheduler.Default);

    /// <summary>Opens the FIFO for reading ourselves, so the probe's writer returns.</summary>
    private static async Task ReleaseAsync(string fifo, Task probe)
    {
        using (new FileStream(fifo, FileMode.Open, FileAccess.Read))
        {
            await probe.WaitAsync(TimeSpan.FromSeconds(10));
        }
    }

    private static async Task QemuIoAsync(string image, string format, string command, bool readOnly = false)
    {
        var output = readOnly
            ? await RunAsync("qemu-io", "-f", format, "-r", "-c", command, image)
            : await RunAsync("qemu-io", "-f", format, "-c", command, image);
        Assert.DoesNotContain("Pattern verification failed", output, StringComparison.Ordinal);
    }

    private static async Task<string> Sha256Async(string path)
    {
        await using var f = File.OpenRead(path);
        return Convert.ToHexStringLower(await SHA256.HashDataAsync(f));
    }

    private static async Task<string> RunAsync(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        Assert.True(p.ExitCode == 0, $"{file} {string.Join(' ', args)}: {await stderr}");
        return await stdout;
    }
}
