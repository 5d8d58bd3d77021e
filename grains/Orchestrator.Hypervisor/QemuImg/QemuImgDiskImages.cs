using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Orchestrator.Hypervisor.QemuImg;

/// <summary>
/// <see cref="IDiskImages"/> on the local file system: qemu-img (a process, argument list, never a shell) for
/// info/create/check/commit/convert, and an in-process sparse copy with SHA-256 for same-format copies.
/// Every qemu-img call names the format of every image it opens (<c>-f</c>, <c>-F</c>, or a <c>json:</c> image
/// specification with a driver per layer): qemu-img never probes a format from bytes a guest may have written, and it
/// opens no backing file but those the caller named. Every call runs within a time bound (<see cref="QemuImgTimeouts"/>).
/// </summary>
public sealed partial class QemuImgDiskImages : IDiskImages
{
    private static readonly HashSet<string> KnownFormats = new(StringComparer.Ordinal) { "raw", "qcow2" };

    private readonly ILogger _logger;
    private readonly string _qemuImg;
    private readonly QemuImgTimeouts _timeouts;

    public QemuImgDiskImages(ILogger? logger = null, string qemuImgPath = "qemu-img", QemuImgTimeouts? timeouts = null)
    {
        _logger = logger ?? NullLogger.Instance;
        _qemuImg = qemuImgPath;
        _timeouts = timeouts ?? new QemuImgTimeouts();
    }

    public async Task<ImageInfo> InfoAsync(string path, string format, CancellationToken cancellationToken = default)
    {
        using var json = await InfoJsonAsync(path, format, cancellationToken).ConfigureAwait(false);
        var root = json.RootElement;
        return new ImageInfo(
            path,
            GetString(root, "format") ?? format,
            GetLong(root, "virtual-size"),
            GetLong(root, "actual-size"),
            GetString(root, "full-backing-filename") ?? GetString(root, "backing-filename"),
            GetString(root, "backing-filename-format"))
        {
            BackingEntry = GetString(root, "backing-filename"),
        };
    }

    public async Task CreateAsync(string path, string format, long virtualSize, string? backingFile = null, string? backingFormat = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentException.ThrowIfNullOrWhiteSpace(format);
        ArgumentOutOfRangeException.ThrowIfNegative(virtualSize);
        RequireFormat(format, nameof(format));
        if (backingFile is not null)
        {
            RequireFormat(backingFormat, nameof(backingFormat));
        }

        if (File.Exists(path) || Directory.Exists(path))
        {
            throw new HypervisorException(HypervisorErrorKind.FileExists, $"{path} exists already; refusing to overwrite it");
        }

        if (virtualSize == 0 && backingFile is null)
        {
            throw new HypervisorException(HypervisorErrorKind.InvalidArgument, "a size is needed for an image without a backing file");
        }

        List<string> args = ["create", "-q", "-f", format];
        if (backingFile is not null)
        {
            args.AddRange(["-b", backingFile, "-F", backingFormat!]);
        }

        args.Add(path);
        if (virtualSize > 0)
        {
            args.Add(virtualSize.ToString(CultureInfo.InvariantCulture));
        }

        await RunCheckedAsync(args, _timeouts.Create, cancellationToken).ConfigureAwait(false);
        Log.Created(_logger, path, format, virtualSize);
    }

    public async Task<CopyResult> CopyAsync(string source, string sourceFormat, string destination, CopyOptions options, IProgress<CopyProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        RequireFile(source);
        RequireFormat(sourceFormat, nameof(sourceFormat));
        foreach (var layer in options.SourceBackingChain)
        {
            RequireFile(layer.Path);
            RequireFormat(layer.Format, "backing chain format");
        }

        if (SafeFiles.Occupied(destination))
        {
            throw new HypervisorException(HypervisorErrorKind.FileExists, $"copy destination {destination} exists already; refusing to overwrite it");
        }

        CopyResult result;
        if (options.SourceBackingChain.Count == 0 && (options.TargetFormat is null || options.TargetFormat == sourceFormat))
        {
            // Byte for byte, in process: nothing parses the image, so nothing a guest wrote into it is interpreted.
            result = await SparseFile.CopyAsync(source, destination, options.ComputeSha256, options.ComputeDataSha256, options.BandwidthBytesPerSecond, progress, cancellationToken, privacy: options.Privacy).ConfigureAwait(false);
            Log.Copied(_logger, source, destination, result.BytesCopied, result.Duration.TotalMilliseconds);
        }
        else
        {
            // A chain flattens to qcow2 unless asked otherwise: qcow2 stays sparse whatever the target file system
            // and transfer, and the top of a chain is qcow2 anyway (only qcow2 has a backing file), so a restore
            // defines the same disk format it backed up.
            var targetFormat = options.TargetFormat ?? "qcow2";
            RequireFormat(targetFormat, nameof(options.TargetFormat));
            result = await ConvertAsync(source, sourceFormat, destination, targetFormat, options, progress, cancellationToken).ConfigureAwait(false);
            Log.Converted(_logger, source, sourceFormat, destination, targetFormat, result.BytesCopied, result.Duration.TotalMilliseconds);
        }

        return result;
    }

    public async Task<ImageCheckResult> CheckAsync(string path, string format, CancellationToken cancellationToken = default)
    {
        RequireFile(path);
        RequireFormat(format, nameof(format));

        // "backing": null: a qcow2 copy is checked on its own; a backing file its header names is never opened
        // (qemu-img check would otherwise open it, whatever -f says).
        var spec = ImageSpec(path, format, []);
        var result = await ToolRunner.RunAsync(_qemuImg, ["check", "-f", format, "--output=json", spec], null, _timeouts.Check, cancellationToken).ConfigureAwait(false);

        // 0 clean, 2 corrupt, 3 leaks only: all print the JSON report. 63: the format has no checks (raw).
        if (result.ExitCode == 63)
        {
            return new ImageCheckResult(true, 0, 0, $"format has no consistency checks (no metadata to check): {result.StandardError.Trim()}");
        }

        // 1: the check could not complete (e.g. metadata too damaged to walk): not clean, whatever the details.
        if (result.ExitCode == 1)
        {
            return new ImageCheckResult(false, 1, 0, $"{result.StandardOutput}{result.StandardError}".Trim());
        }

        if (result.ExitCode is not (0 or 2 or 3) || string.IsNullOrWhiteSpace(result.StandardOutput))
        {
            throw ToolFailed("check", path, result);
        }

        using var json = JsonDocument.Parse(result.StandardOutput);
        var root = json.RootElement;
        var errors = (int)(GetLong(root, "check-errors") + GetLong(root, "corruptions"));
        var leaks = (int)GetLong(root, "leaks");
        return new ImageCheckResult(errors == 0 && result.ExitCode != 2, errors, leaks, result.StandardOutput);
    }

    public Task<string> ComputeSha256Async(string path, CancellationToken cancellationToken = default) =>
        File.Exists(path)
            ? SparseFile.Sha256Async(path, cancellationToken)
            : Task.FromException<string>(new HypervisorException(HypervisorErrorKind.FileNotFound, $"'{path}' does not exist"));

    public async Task<ImageDigests> ComputeDigestsAsync(string path, CancellationToken cancellationToken = default)
    {
        RequireFile(path);
        var (sha256, data) = await SparseFile.DigestsAsync(path, data: true, cancellationToken).ConfigureAwait(false);
        return new ImageDigests(sha256!, data!);
    }

    public async Task CommitAsync(string overlayPath, IReadOnlyList<DiskLayer> backingChain, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(backingChain);
        RequireFile(overlayPath);
        if (backingChain.Count == 0)
        {
            throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"{overlayPath}: no image below it was named to commit into");
        }

        foreach (var layer in backingChain)
        {
            RequireFile(layer.Path);
            RequireFormat(layer.Format, "backing chain format");
        }

        // The overlay (our own qcow2) with every layer below it named with its format, and -b: into exactly the
        // image below the overlay, never deeper into a chain other VMs may share.
        var spec = ImageSpec(overlayPath, "qcow2", backingChain);
        await RunCheckedAsync(["commit", "-q", "-f", "qcow2", "-b", backingChain[0].Path, spec], _timeouts.Commit, cancellationToken).ConfigureAwait(false);
        Log.Committed(_logger, overlayPath);
    }

    public async Task SetBackingAsync(string path, string? backingFile, string? backingFormat, CancellationToken cancellationToken = default)
    {
        RequireFile(path);
        if (backingFile is not null)
        {
            RequireFormat(backingFormat, "backing format");
        }

        // -u: only the header entry is rewritten; qemu-img opens neither the old backing file (which may be a live disk,
        // as in an incremental backup's target) nor the new one. -f names the image's own format.
        List<string> args = ["rebase", "-q", "-u", "-f", "qcow2", "-b", backingFile ?? string.Empty];
        if (backingFile is not null)
        {
            args.AddRange(["-F", backingFormat!]);
        }

        args.Add(path);
        await RunCheckedAsync(args, _timeouts.Create, cancellationToken).ConfigureAwait(false);
    }

    public async Task<IReadOnlyList<ImageBitmap>> ListBitmapsAsync(string path, string format, CancellationToken cancellationToken = default)
    {
        RequireFormat(format, nameof(format));
        if (format != "qcow2")
        {
            RequireFile(path);
            return []; // a raw image holds no bitmaps; its bytes are the guest's and are not parsed
        }

        using var json = await InfoJsonAsync(path, format, cancellationToken).ConfigureAwait(false);
        if (!json.RootElement.TryGetProperty("format-specific", out var specific)
            || !specific.TryGetProperty("data", out var data)
            || !data.TryGetProperty("bitmaps", out var bitmaps)
            || bitmaps.ValueKind != JsonValueKind.Array)
        {
            return [];
        }

        return [.. bitmaps.EnumerateArray().Select(b =>
        {
            var flags = b.TryGetProperty("flags", out var f) && f.ValueKind == JsonValueKind.Array
                ? f.EnumerateArray().Select(x => x.GetString()).ToHashSet(StringComparer.Ordinal)
                : [];
            return new ImageBitmap(GetString(b, "name") ?? string.Empty, flags.Contains("in-use"), flags.Contains("auto"), GetLong(b, "granularity"));
        })];
    }

    /// <summary>
    /// Internal snapshots of an image. Read from <c>qemu-img info --output=json</c>, whose "snapshots" array carries the
    /// same rows as <c>qemu-img snapshot -l</c> in a stable format. qcow2 does not record the guest's power state:
    /// a snapshot with VM state is reported as Running, one without as ShutOff.
    /// </summary>
    public async Task<IReadOnlyList<InternalSnapshotInfo>> ListSnapshotsAsync(string path, string format, CancellationToken cancellationToken = default)
    {
        RequireFormat(format, nameof(format));
        if (format != "qcow2")
        {
            RequireFile(path);
            return []; // only qcow2 holds internal snapshots; a raw image's bytes are the guest's and are not parsed
        }

        using var json = await InfoJsonAsync(path, format, cancellationToken).ConfigureAwait(false);
        if (!json.RootElement.TryGetProperty("snapshots", out var snapshots) || snapshots.ValueKind != JsonValueKind.Array)
        {
            return [];
        }

        return snapshots.EnumerateArray()
            .Select(s =>
            {
                var vmStateSize = GetLong(s, "vm-state-size");
                var hasMemory = vmStateSize > 0;
                var created = DateTimeOffset.FromUnixTimeSeconds(GetLong(s, "date-sec")).AddTicks(GetLong(s, "date-nsec") / 100);
                return new InternalSnapshotInfo(GetString(s, "name") ?? string.Empty, created, hasMemory, hasMemory ? DomainPowerState.Running : DomainPowerState.ShutOff, null)
                {
                    VmStateSize = vmStateSize,
                };
            })
            .OrderBy(s => s.CreatedAt)
            .ToList();
    }

    public Task<bool> ExistsAsync(string path, CancellationToken cancellationToken = default) =>
        Task.FromResult(File.Exists(path));

    public Task DeleteAsync(string path, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (Directory.Exists(path))
        {
            throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"{path} is a directory, not an image");
        }

        if (File.Exists(path))
        {
            File.Delete(path);
            Log.Deleted(_logger, path);
        }

        return Task.CompletedTask;
    }

    public Task<long> FreeSpaceAsync(string path, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var dir = Path.GetFullPath(path);
        while (!Directory.Exists(dir))
        {
            dir = Path.GetDirectoryName(dir) ?? "/";
        }

        // On Linux DriveInfo(dir) runs statvfs on the directory itself, which reports its file system.
        return Task.FromResult(new DriveInfo(dir).AvailableFreeSpace);
    }

    private async Task<CopyResult> ConvertAsync(string source, string sourceFormat, string destination, string targetFormat, CopyOptions options, IProgress<CopyProgress>? progress, CancellationToken cancellationToken)
    {
        var started = DateTimeOffset.UtcNow;
        var total = new FileInfo(source).Length + options.SourceBackingChain.Sum(l => new FileInfo(l.Path).Length);
        // -U: the source is frozen (nobody writes it) but a running QEMU holds it, and for a chain its template.
        List<string> args = ["convert", "-p", "-U", "-f", sourceFormat, "-O", targetFormat];
        if (options.BandwidthBytesPerSecond > 0)
        {
            // qemu-img has no rate limit of its own for convert; cap its parallelism so it is at least gentle.
            args.AddRange(["-m", "1"]);
        }

        // qemu-img creates its output by path (following links, with the umask's mode): it writes into a fresh 0700
        // directory nobody else can reach, and the file is linked into place once it has its final mode. The source
        // is a json: specification: its format and every backing layer's path and format named, the bottom one with
        // no backing at all.
        var staging = SafeFiles.CreateStagingDirectory(destination);
        var staged = Path.Combine(staging, "image");
        var published = false;
        args.AddRange([ImageSpec(source, sourceFormat, options.SourceBackingChain), staged]);
        try
        {
            var result = await ToolRunner.RunAsync(
                _qemuImg,
                args,
                chunk =>
                {
                    var matches = ProgressPattern().Matches(chunk);
                    if (progress is not null && matches.Count > 0
                        && double.TryParse(matches[^1].Groups[1].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out var percent))
                    {
                        progress.Report(new CopyProgress((long)(total * percent / 100), total));
                    }
                },
                _timeouts.Convert,
                cancellationToken).ConfigureAwait(false);
            if (result.ExitCode != 0)
            {
                throw ToolFailed("convert", source, result);
            }

            SafeFiles.PublishStaged(staged, destination, options.Privacy);
            published = true;

            // qemu-img wrote the file: its digests are read back from it.
            var (sha, data) = options.ComputeSha256 || options.ComputeDataSha256
                ? await SparseFile.DigestsAsync(destination, options.ComputeDataSha256, cancellationToken).ConfigureAwait(false)
                : default;
            var written = new FileInfo(destination).Length;
            progress?.Report(new CopyProgress(total, total));
            return new CopyResult(written, options.ComputeSha256 ? sha : null, DateTimeOffset.UtcNow - started, data);
        }
        catch
        {
            SafeFiles.RemoveStaging(staged);
            if (published)
            {
                File.Delete(destination);
            }

            throw;
        }
    }

    /// <summary>
    /// A <c>json:</c> image specification: the image opened as <paramref name="format"/> through the file protocol, each
    /// layer of <paramref name="backingChain"/> nested as its backing with its own format, and the last one with
    /// <c>"backing": null</c>, so qemu-img reads no backing file name from any header. JSON-escaped, never a shell.
    /// </summary>
    internal static string ImageSpec(string path, string format, IReadOnlyList<DiskLayer> backingChain)
    {
        JsonNode? below = null;
        for (var i = backingChain.Count - 1; i >= 0; i--)
        {
            below = Layer(backingChain[i].Path, backingChain[i].Format, below);
        }

        return "json:" + Layer(path, format, below).ToJsonString();

        static JsonObject Layer(string path, string format, JsonNode? backing) => new()
        {
            ["driver"] = format,
            ["file"] = new JsonObject { ["driver"] = "file", ["filename"] = Path.GetFullPath(path) },
            ["backing"] = backing,
        };
    }

    private async Task<JsonDocument> InfoJsonAsync(string path, string format, CancellationToken cancellationToken)
    {
        RequireFile(path);
        RequireFormat(format, nameof(format));

        // -U: reading metadata of an image a running guest holds is fine and needs the shared lock bypassed.
        // qemu-img info opens no backing file; -f: the format is named, never probed.
        var result = await ToolRunner.RunAsync(_qemuImg, ["info", "-f", format, "--output=json", "-U", path], null, _timeouts.Info, cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            throw ToolFailed("info", path, result);
        }

        return JsonDocument.Parse(result.StandardOutput);
    }

    private async Task RunCheckedAsync(IReadOnlyList<string> args, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var result = await ToolRunner.RunAsync(_qemuImg, args, null, timeout, cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            throw ToolFailed(args[0], args[^1], result);
        }
    }

    private static void RequireFile(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (!File.Exists(path))
        {
            throw new HypervisorException(HypervisorErrorKind.FileNotFound, $"image {path} does not exist");
        }
    }

    /// <summary>Only the formats the orchestrator handles; anything else (or nothing) is refused, never guessed.</summary>
    private static void RequireFormat(string? format, string field)
    {
        if (format is null || !KnownFormats.Contains(format))
        {
            throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"{field}: '{format}' is not an image format this driver opens (raw or qcow2); formats are named, never probed");
        }
    }

    private static HypervisorException ToolFailed(string verb, string path, ToolResult result)
    {
        var detail = result.StandardError.Trim();
        var kind = detail.Contains("No space left", StringComparison.Ordinal) ? HypervisorErrorKind.NoSpace : HypervisorErrorKind.ToolFailed;
        return new HypervisorException(kind, $"qemu-img {verb} {path} failed (exit {result.ExitCode}): {detail}");
    }

    private static string? GetString(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static long GetLong(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt64() : 0;

    [GeneratedRegex(@"\((\d+(?:\.\d+)?)/100%\)")]
    private static partial Regex ProgressPattern();
}
