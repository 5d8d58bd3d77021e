using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Orchestrator.Hypervisor.QemuImg;

/// <summary>
/// <see cref="IDiskImages"/> on the local file system: qemu-img (a process, argument list, never a shell) for
/// info/create/check/commit/convert, and an in-process sparse copy with SHA-256 for same-format copies.
/// </summary>
public sealed partial class QemuImgDiskImages : IDiskImages
{
    private readonly ILogger _logger;
    private readonly string _qemuImg;

    public QemuImgDiskImages(ILogger? logger = null, string qemuImgPath = "qemu-img")
    {
        _logger = logger ?? NullLogger.Instance;
        _qemuImg = qemuImgPath;
    }

    public async Task<ImageInfo> InfoAsync(string path, CancellationToken cancellationToken = default)
    {
        using var json = await InfoJsonAsync(path, cancellationToken).ConfigureAwait(false);
        var root = json.RootElement;
        return new ImageInfo(
            path,
            GetString(root, "format") ?? "raw",
            GetLong(root, "virtual-size"),
            GetLong(root, "actual-size"),
            GetString(root, "full-backing-filename") ?? GetString(root, "backing-filename"),
            GetString(root, "backing-filename-format"));
    }

    public async Task CreateAsync(string path, string format, long virtualSize, string? backingFile = null, string? backingFormat = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentException.ThrowIfNullOrWhiteSpace(format);
        ArgumentOutOfRangeException.ThrowIfNegative(virtualSize);
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
            args.AddRange(["-b", backingFile, "-F", backingFormat ?? (await InfoAsync(backingFile, cancellationToken).ConfigureAwait(false)).Format]);
        }

        args.Add(path);
        if (virtualSize > 0)
        {
            args.Add(virtualSize.ToString(CultureInfo.InvariantCulture));
        }

        await RunCheckedAsync(args, cancellationToken).ConfigureAwait(false);
        Log.Created(_logger, path, format, virtualSize);
    }

    public async Task<CopyResult> CopyAsync(string source, string destination, CopyOptions options, IProgress<CopyProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        RequireFile(source);
        if (File.Exists(destination) || Directory.Exists(destination) || new FileInfo(destination).LinkTarget is not null)
        {
            throw new HypervisorException(HypervisorErrorKind.FileExists, $"copy destination {destination} exists already; refusing to overwrite it");
        }

        var sourceFormat = (await InfoAsync(source, cancellationToken).ConfigureAwait(false)).Format;
        CopyResult result;
        if (options.TargetFormat is null || options.TargetFormat == sourceFormat)
        {
            result = await SparseFile.CopyAsync(source, destination, options.ComputeSha256, options.ComputeDataSha256, options.BandwidthBytesPerSecond, progress, cancellationToken, privacy: options.Privacy).ConfigureAwait(false);
            Log.Copied(_logger, source, destination, result.BytesCopied, result.Duration.TotalMilliseconds);
        }
        else
        {
            result = await ConvertAsync(source, sourceFormat, destination, options, progress, cancellationToken).ConfigureAwait(false);
            Log.Converted(_logger, source, sourceFormat, destination, options.TargetFormat, result.BytesCopied, result.Duration.TotalMilliseconds);
        }

        return result;
    }

    public async Task<ImageCheckResult> CheckAsync(string path, CancellationToken cancellationToken = default)
    {
        RequireFile(path);
        var result = await ToolRunner.RunAsync(_qemuImg, ["check", "--output=json", path], null, cancellationToken).ConfigureAwait(false);

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

    public async Task CommitAsync(string overlayPath, CancellationToken cancellationToken = default)
    {
        RequireFile(overlayPath);
        await RunCheckedAsync(["commit", "-q", overlayPath], cancellationToken).ConfigureAwait(false);
        Log.Committed(_logger, overlayPath);
    }

    /// <summary>
    /// Internal snapshots of an image. Read from <c>qemu-img info --output=json</c>, whose "snapshots" array carries the
    /// same rows as <c>qemu-img snapshot -l</c> in a stable format. qcow2 does not record the guest's power state:
    /// a snapshot with VM state is reported as Running, one without as ShutOff.
    /// </summary>
    public async Task<IReadOnlyList<InternalSnapshotInfo>> ListSnapshotsAsync(string path, CancellationToken cancellationToken = default)
    {
        using var json = await InfoJsonAsync(path, cancellationToken).ConfigureAwait(false);
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

    private async Task<CopyResult> ConvertAsync(string source, string sourceFormat, string destination, CopyOptions options, IProgress<CopyProgress>? progress, CancellationToken cancellationToken)
    {
        var started = DateTimeOffset.UtcNow;
        var total = new FileInfo(source).Length;
        List<string> args = ["convert", "-p", "-f", sourceFormat, "-O", options.TargetFormat!];
        if (options.BandwidthBytesPerSecond > 0)
        {
            // qemu-img has no rate limit of its own for convert; cap its parallelism so it is at least gentle.
            args.AddRange(["-m", "1"]);
        }

        // qemu-img creates its output by path (following links, with the umask's mode): it writes into a fresh 0700
        // directory nobody else can reach, and the file is linked into place once it has its final mode.
        var staging = SafeFiles.CreateStagingDirectory(destination);
        var staged = Path.Combine(staging, "image");
        var published = false;
        args.AddRange([source, staged]);
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

    private async Task<JsonDocument> InfoJsonAsync(string path, CancellationToken cancellationToken)
    {
        RequireFile(path);

        // -U: reading metadata of an image a running guest holds is fine and needs the shared lock bypassed.
        var result = await ToolRunner.RunAsync(_qemuImg, ["info", "--output=json", "-U", path], null, cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            throw ToolFailed("info", path, result);
        }

        return JsonDocument.Parse(result.StandardOutput);
    }

    private async Task RunCheckedAsync(IReadOnlyList<string> args, CancellationToken cancellationToken)
    {
        var result = await ToolRunner.RunAsync(_qemuImg, args, null, cancellationToken).ConfigureAwait(false);
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
