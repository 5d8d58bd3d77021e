using Orchestrator.Cli.Output;

namespace Orchestrator.Cli.Views;

/// <summary>
/// How <c>backup watch</c> shows a run as it goes: a frame of lines redrawn in place on a terminal, or one
/// line per update when stdout is a file or a pipe.
/// </summary>
internal static class BackupProgressView
{
    public const int BarWidth = 30;

    /// <summary>
    /// The live frame: a heading (key, step, elapsed time), then one progress bar per disk, then the error
    /// once the run failed.
    /// <code>
    /// kvm-01/web-1/b-20261126-210000-3f9a1c  copying  elapsed 0:01:23
    ///   vda  [###############...............]   1 GiB/2 GiB   50%
    /// </code>
    /// </summary>
    public static IReadOnlyList<string> Frame(BackupRunView run, DateTime now, bool color)
    {
        var lines = new List<string>
        {
            $"{run.Key}  {Ansi.Bold(BackupRunView.StepText(run), color)}  elapsed {TextFormat.Duration(Elapsed(run, now))}",
        };
        int targetWidth = run.Disks.Select(d => d.Target.Length).DefaultIfEmpty(0).Max();
        string[] sizes = [.. run.Disks.Select(d => $"{TextFormat.Bytes(d.BytesCopied)}/{TextFormat.Bytes(d.BytesTotal)}")];
        int sizeWidth = sizes.Select(s => s.Length).DefaultIfEmpty(0).Max();
        for (int i = 0; i < run.Disks.Count; i++)
        {
            BackupDiskView disk = run.Disks[i];
            lines.Add($"  {disk.Target.PadRight(targetWidth)}  [{Bar(disk.BytesCopied, disk.BytesTotal)}]  "
                + $"{sizes[i].PadLeft(sizeWidth)}  {TextFormat.Percent(disk.BytesCopied, disk.BytesTotal),4}");
        }

        if (run.Error is not null)
        {
            lines.Add($"  error: {run.Error}");
        }

        return lines;
    }

    /// <summary>
    /// One update as one line, for logs: elapsed time, step, bytes over all disks, each disk's percentage,
    /// and the error once the run failed.
    /// <code>0:01:23  copying  1.5 GiB/12 GiB  12%  vda 50%  vdb 0%</code>
    /// </summary>
    public static string Line(BackupRunView run, DateTime now)
    {
        long copied = run.Disks.Sum(d => d.BytesCopied);
        long total = run.Disks.Sum(d => d.BytesTotal);
        var line = new System.Text.StringBuilder()
            .Append(TextFormat.Duration(Elapsed(run, now)))
            .Append("  ").Append(BackupRunView.StepText(run))
            .Append("  ").Append(TextFormat.Bytes(copied)).Append('/').Append(TextFormat.Bytes(total))
            .Append("  ").Append(TextFormat.Percent(copied, total));
        foreach (BackupDiskView disk in run.Disks)
        {
            line.Append("  ").Append(disk.Target).Append(' ').Append(TextFormat.Percent(disk.BytesCopied, disk.BytesTotal));
        }

        if (run.Error is not null)
        {
            line.Append("  error: ").Append(run.Error);
        }

        return line.ToString();
    }

    /// <summary>From the start to the end, or to <paramref name="now"/> while the run goes on.</summary>
    public static TimeSpan Elapsed(BackupRunView run, DateTime now) =>
        run.StartedAt is { } started ? (run.EndedAt ?? now) - started : TimeSpan.Zero;

    private static string Bar(long copied, long total)
    {
        int filled = total <= 0 ? 0 : (int)Math.Clamp(copied * BarWidth / (double)total, 0, BarWidth);
        return new string('#', filled) + new string('.', BarWidth - filled);
    }
}
