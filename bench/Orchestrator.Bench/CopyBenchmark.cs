using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.QemuImg;

namespace Orchestrator.Bench;

/// <summary>
/// Copying a frozen raw base: the in-process sparse copy (with and without SHA-256) against `cp --sparse=always`
/// and `qemu-img convert -O raw`, interleaved, on one 1 GiB raw image with 256 MiB of data in 4 MiB extents.
/// Every contender ends with the copy on disk: the driver fsyncs, the tools are followed by `sync FILE` (fsync).
/// </summary>
internal static class CopyBenchmark
{
    private const long MiB = 1024 * 1024;

    public static async Task<int> RunAsync(BenchOptions options)
    {
        var lab = new LabScripts();
        var dir = Path.Combine(lab.LabDir, $"copy-bench-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        try
        {
            var source = Path.Combine(dir, "base.raw");
            await MakeImageAsync(source, 1024 * MiB, 64);
            var images = new QemuImgDiskImages();
            var contenders = new (string Name, Func<string, Task> Copy)[]
            {
                ("driver copy + sha256", d => images.CopyAsync(source, "raw", d, new CopyOptions())),
                ("driver copy", d => images.CopyAsync(source, "raw", d, new CopyOptions { ComputeSha256 = false })),
                ("cp --sparse=always", async d =>
                {
                    await lab.RunCheckedAsync("cp", ["--sparse=always", source, d]);
                    await lab.RunCheckedAsync("sync", [d]);
                }),
                ("qemu-img convert", async d =>
                {
                    await lab.RunCheckedAsync("qemu-img", ["convert", "-f", "raw", "-O", "raw", source, d]);
                    await lab.RunCheckedAsync("sync", [d]);
                }),
            };
            var results = contenders.ToDictionary(c => c.Name, _ => new List<double>());
            Console.WriteLine($"source: 1 GiB raw, 256 MiB of data in 64 extents; {options.Rounds} rounds, order rotated each round; all fsync the copy");
            for (var round = 0; round <= options.Rounds; round++)
            {
                for (var i = 0; i < contenders.Length; i++)
                {
                    var (name, copy) = contenders[(i + round) % contenders.Length];
                    var destination = Path.Combine(dir, "copy.raw");
                    var sw = Stopwatch.StartNew();
                    await copy(destination);
                    var ms = sw.Elapsed.TotalMilliseconds;
                    File.Delete(destination);
                    if (round > 0)
                    {
                        results[name].Add(ms);
                    }
                }
            }

            var baseline = Stats.Median(results["driver copy + sha256"]);
            foreach (var (name, times) in results)
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {name,-22} {Stats.Summary(times)}  {Stats.Median(times) / baseline,5:F2}x of driver copy + sha256"));
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }

        return 0;
    }

    private static async Task MakeImageAsync(string path, long size, int extents)
    {
        await using var f = new FileStream(path, FileMode.CreateNew, FileAccess.Write);
        f.SetLength(size);
        var chunk = RandomNumberGenerator.GetBytes((int)(4 * MiB));
        var stride = size / extents;
        for (var i = 0; i < extents; i++)
        {
            f.Position = i * stride;
            await f.WriteAsync(chunk);
        }

        f.Flush(flushToDisk: true);
    }
}
