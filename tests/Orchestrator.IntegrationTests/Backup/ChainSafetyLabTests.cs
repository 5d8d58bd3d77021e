using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using Grpc.Net.Client;
using Orchestrator.Api.V1;
using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Libvirt;
using Orchestrator.IntegrationTests.Infrastructure;

namespace Orchestrator.IntegrationTests.Backup;

/// <summary>
/// A backup changes no image but its own, on real libvirt + QEMU through a real silo: a linked clone keeps its
/// template byte-identical and its chain, and is backed up as one standalone image; guest-written bytes never make
/// qemu-img open a file or endpoint they name.
/// </summary>
[Collection(BackupLabCollection.Name)]
public sealed partial class ChainSafetyLabTests(BackupLabFixture fixture) : IAsyncLifetime
{
    private readonly string _work = Path.Combine(Path.GetTempPath(), $"orchestrator-chain-{Guid.NewGuid():N}");
    private readonly string _clusterId = $"lab-{Guid.NewGuid():N}"[..16];
    private readonly List<string> _guests = [];
    private readonly List<string> _files = [];

    private LabHost Lab => fixture.Lab;

    public Task InitializeAsync()
    {
        Directory.CreateDirectory(_work);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        foreach (var vm in _guests)
        {
            await Lab.LabAsync("vm.sh", "delete", Lab.Name, vm);
        }

        foreach (var file in _files)
        {
            File.Delete(file);
        }

        if (Directory.Exists(_work))
        {
            Directory.Delete(_work, recursive: true);
        }
    }

    private static BackupService.BackupServiceClient Backups(SiloProcess silo) => new(GrpcChannel.ForAddress(silo.GrpcEndpoint));

    private async Task<SiloProcess> StartSiloAsync(string guest)
    {
        var silo = fixture.NewSilo(_work, _clusterId);
        silo.Start();
        await silo.WaitReadyAsync(TimeSpan.FromMinutes(3));
        await GrpcClients.Fleet(silo.GrpcEndpoint).WaitForVmAsync($"{Lab.Name}/{guest}", TimeSpan.FromMinutes(2));
        return silo;
    }

    [Fact]
    public async Task Backup_LinkedCloneGuest_TemplateByteIdenticalChainKeptCopyStandaloneAndRestorable()
    {
        const string Guest = "bk-clone";
        const string Restored = "bk-clone-r";
        var template = Path.Combine(Lab.ImagesDir, "bk-template.qcow2");
        Directory.CreateDirectory(Lab.ImagesDir);
        File.Delete(template);
        _files.Add(template);
        await RunAsync("qemu-img", "create", "-q", "-f", "qcow2", template, "64M");
        _guests.Add(Guest);
        _guests.Add(Restored);
        await Lab.LabAsync("vm.sh", "delete", Lab.Name, Restored);
        await Lab.CreateGuestAsync(Guest, $"clone:qcow2:{template}", intervalMs: 100);
        await Lab.WaitForSeqAsync(Guest, 10);
        var clone = Lab.DiskPath(Guest, "vda", "qcow2");
        var templateSha = await Sha256Async(template);
        await using var silo = await StartSiloAsync(Guest);
        await using var hv = await LibvirtHypervisor.ConnectAsync(Lab.Uri);
        Assert.Equal([new DiskLayer(template, "qcow2")], (await hv.GetDomainAsync(Guest)).Disks.Single().BackingChain);

        // Twice through the CLI: the old commit (base = NULL) merged the clone into the template on the first run
        // and looped on the second; each run must leave clone -> template as it found it.
        BackupRun run = null!;
        for (var i = 1; i <= 2; i++)
        {
            var cli = await ProcessRunner.RunAsync("dotnet", [Repo.CliDll, "backup", "start", $"{Lab.Name}/{Guest}", "--wait", "--format", "json", "--endpoint", silo.GrpcEndpoint], timeout: TimeSpan.FromMinutes(5));
            Assert.True(cli.ExitCode == 0, $"backup {i}: " + ProcessRunner.Describe(cli) + silo.Log);
            using var json = JsonDocument.Parse(cli.StandardOutput);
            run = (await Backups(silo).GetBackupAsync(new GetBackupRequest { Key = json.RootElement.GetProperty("key").GetString() })).Run;
            Assert.True(run.Step == BackupStep.Completed, $"backup {i} ended {run.Step}: {run.Error}\n{silo.Log}");

            var disk = (await hv.GetDomainAsync(Guest)).Disks.Single();
            Assert.Equal(clone, disk.SourcePath);
            Assert.Equal([new DiskLayer(template, "qcow2")], disk.BackingChain);
            Assert.Equal(templateSha, await Sha256Async(template));
        }

        Assert.Contains(clone, await Lab.VirshAsync("domblklist", Guest), StringComparison.Ordinal);
        var xml = await Lab.VirshAsync("dumpxml", Guest);
        Assert.Matches($"<backingStore type=.file.[^>]*>\\s*<format type=.qcow2./>\\s*<source file=.{Regex.Escape(template)}.", xml);
        Assert.Empty(Lab.LeftoverOverlays());

        // The copy is one standalone qcow2 holding the whole chain, and a consistent point in time.
        var copy = Assert.Single(run.Disks);
        Assert.Equal("qcow2", copy.Format);
        var info = await RunAsync("qemu-img", "info", "-f", "qcow2", "--output=json", copy.BackupPath);
        Assert.DoesNotContain("backing-filename", info, StringComparison.Ordinal);
        var atBackup = await Lab.CounterCheckAsync(copy.BackupPath);
        Assert.True(atBackup.Consistent, atBackup.Json);
        using (var manifest = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(run.BackupSetPath, "manifest.json"))))
        {
            var layer = Assert.Single(manifest.RootElement.GetProperty("disks")[0].GetProperty("source_backing_chain").EnumerateArray());
            Assert.Equal((template, "qcow2"), (layer.GetProperty("path").GetString(), layer.GetProperty("format").GetString()));
        }

        // Restored without the template: the new VM boots from the copy alone and continues from the backup point.
        var restored = await Backups(silo).RestoreAsync(new RestoreRequest { Key = run.Key, NewName = Restored, Define = true });
        var image = Assert.Single(restored.Images);
        Assert.DoesNotContain("backing-filename", await RunAsync("qemu-img", "info", "-f", "qcow2", "--output=json", image), StringComparison.Ordinal);
        await Lab.VirshAsync("destroy", Guest); // one TCG guest at a time on 2 cores (and the console file may be shared)
        var console = ConsoleOf(await Lab.VirshAsync("dumpxml", Restored));
        var offset = File.Exists(console) ? new FileInfo(console).Length : 0;
        await Lab.VirshAsync("start", Restored);
        await WaitForConsoleSeqAsync(console, offset, atBackup.MaxSeq + 3, TimeSpan.FromMinutes(3));
        await Lab.VirshAsync("destroy", Restored);
        var report = await Lab.CounterCheckAsync(image);
        Assert.True(report.Consistent, report.Json);
        Assert.True(report.MaxSeq > atBackup.MaxSeq, $"restored guest did not continue: max {report.MaxSeq}, backup point {atBackup.MaxSeq}");
        Assert.Equal(templateSha, await Sha256Async(template));
    }

    [Fact]
    public async Task Backup_RawDisksHoldingGuestWrittenQcow2Headers_NothingTheyNameIsOpenedAndCopiesAreByteExact()
    {
        const string Guest = "bk-hostile";
        _guests.Add(Guest);

        // One record per disk, then the guest sleeps: the headers written below stay as written.
        await Lab.CreateVmAsync(Guest, "qcow2:64M raw:16M raw:16M raw:16M", intervalMs: 600_000);
        await Lab.WaitForSeqAsync(Guest, 0);

        // (a) a listening unix socket named as an NBD export
        var socketPath = Path.Combine(_work, "nbd.sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(socketPath));
        listener.Listen(8);
        var connection = listener.AcceptAsync();

        // (b) a host file: a FIFO (opening it would block, and our writer would wake) ...
        var fifo = Path.Combine(_work, "host-secret.fifo");
        await RunAsync("mkfifo", "-m", "600", fifo);
        var fifoOpened = Task.Factory.StartNew(
            () =>
            {
                using var writer = new FileStream(fifo, FileMode.Open, FileAccess.Write);
            },
            CancellationToken.None,
            TaskCreationOptions.LongRunning,
            TaskScheduler.Default);

        // ... and a regular file whose access time is older than its change time, so any read moves it (relatime).
        var secret = Path.Combine(_work, "host-secret.raw");
        await File.WriteAllBytesAsync(secret, RandomNumberGenerator.GetBytes(1 << 20));
        File.SetLastAccessTimeUtc(secret, new DateTime(2001, 1, 1, 0, 0, 0, DateTimeKind.Utc));
        var secretAtime = File.GetLastAccessTimeUtc(secret);

        var named = new Dictionary<string, string> { ["vdb"] = $"nbd+unix:///export?socket={socketPath}", ["vdc"] = fifo, ["vdd"] = secret };
        foreach (var (target, backing) in named)
        {
            await WriteQcow2HeaderAsync(Lab.DiskPath(Guest, target, "raw"), backing);
        }

        await using var silo = await StartSiloAsync(Guest);
        var started = (await Backups(silo).StartBackupAsync(new StartBackupRequest { Vm = $"{Lab.Name}/{Guest}" })).Run;
        var run = await BackupLabFixture.WaitForRunAsync(Backups(silo), started.Key, TimeSpan.FromMinutes(5));

        Assert.True(run.Step == BackupStep.Completed, $"run ended {run.Step}: {run.Error}\n{silo.Log}");
        foreach (var target in named.Keys)
        {
            var disk = run.Disks.Single(d => d.Target == target);
            Assert.Equal("raw", disk.Format);
            Assert.True(disk.Verified, $"{target} not verified");
            var source = Lab.DiskPath(Guest, target, "raw");
            Assert.Equal(await Sha256Async(source), await Sha256Async(disk.BackupPath));
            Assert.Equal(disk.Sha256, await Sha256Async(disk.BackupPath));
        }

        await Task.Delay(500);
        Assert.False(connection.IsCompleted, "a connection arrived on the socket a guest's header named");
        Assert.False(fifoOpened.IsCompleted, "the FIFO a guest's header named was opened");
        Assert.Equal(secretAtime, File.GetLastAccessTimeUtc(secret));

        // The detectors work: our own read of the file moves its access time, our own open of the FIFO wakes the writer.
        await File.ReadAllBytesAsync(secret);
        Assert.NotEqual(secretAtime, File.GetLastAccessTimeUtc(secret));
        using (new FileStream(fifo, FileMode.Open, FileAccess.Read))
        {
            await fifoOpened.WaitAsync(TimeSpan.FromSeconds(10));
        }
    }

    /// <summary>Writes a qcow2 header naming <paramref name="backing"/> over the start of a raw disk, as its guest could.</summary>
    private async Task WriteQcow2HeaderAsync(string rawDisk, string backing)
    {
        var header = Path.Combine(_work, Path.GetFileName(rawDisk) + ".header.qcow2");
        await RunAsync("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", "raw", header, "16M");
        var bytes = await File.ReadAllBytesAsync(header);
        await using (var disk = new FileStream(rawDisk, FileMode.Open, FileAccess.Write))
        {
            await disk.WriteAsync(bytes);
            await disk.FlushAsync();
        }

        // Probed, these bytes are a qcow2 image with that backing file: exactly what must never be followed.
        var probed = await RunAsync("qemu-img", "info", "-U", "-f", "qcow2", "--output=json", rawDisk);
        Assert.Contains("\"backing-filename\"", probed, StringComparison.Ordinal);
    }

    private static string ConsoleOf(string domainXml) =>
        ConsoleSource().Match(domainXml) is { Success: true } m ? m.Groups[1].Value : throw new InvalidOperationException("no serial file in " + domainXml);

    private static async Task WaitForConsoleSeqAsync(string console, long offset, long seq, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            if (File.Exists(console))
            {
                await using var stream = new FileStream(console, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
                stream.Seek(Math.Min(offset, stream.Length), SeekOrigin.Begin);
                var text = await new StreamReader(stream).ReadToEndAsync();
                if (SeqLine().Matches(text).Any(m => long.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) >= seq))
                {
                    return;
                }
            }

            Assert.True(DateTime.UtcNow < deadline, $"no seq >= {seq} in {console}");
            await Task.Delay(500);
        }
    }

    private static async Task<string> RunAsync(string file, params string[] args)
    {
        var r = await ProcessRunner.RunAsync(file, args);
        Assert.True(r.ExitCode == 0, ProcessRunner.Describe(r));
        return r.StandardOutput;
    }

    private static async Task<string> Sha256Async(string path)
    {
        await using var f = File.OpenRead(path);
        return Convert.ToHexStringLower(await SHA256.HashDataAsync(f));
    }

    [GeneratedRegex(@"<serial type=.file.>\s*<source path=.([^'""]+).")]
    private static partial Regex ConsoleSource();

    [GeneratedRegex(@"orch: seq=(\d+)")]
    private static partial Regex SeqLine();
}
