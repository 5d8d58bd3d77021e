using System.Diagnostics;
using System.Globalization;

namespace Orchestrator.Bench;

/// <summary>
/// CPU time (user + system) of the processes a benchmark runs, from /proc: each silo process, PostgreSQL (the
/// postmaster, every live child — backends, WAL writer, checkpointer, autovacuum — and the children it already
/// reaped, through its cutime/cstime), this process (the client) and, for scale, the whole machine. CPU time, not
/// wall time: on a machine shared with other work the wall time of a run says little, but the CPU seconds the
/// contender's own processes spent per backup stay comparable.
/// </summary>
internal sealed class CpuProbe(IReadOnlyList<(string Name, int Pid)> silos, int postmasterPid)
{
    /// <summary>Clock ticks per second of /proc/PID/stat's times (USER_HZ; 100 on every Linux this runs on).</summary>
    private static readonly double TicksPerSecond = ReadTicksPerSecond();

    /// <summary>CPU seconds spent so far, by process group.</summary>
    public sealed record Sample(IReadOnlyDictionary<string, double> Silos, double Postgres, double Client, double MachineBusy, double MachineTotal)
    {
        public double SilosTotal => Silos.Values.Sum();

        public Sample Minus(Sample before) => new(
            Silos.ToDictionary(s => s.Key, s => s.Value - before.Silos.GetValueOrDefault(s.Key), StringComparer.Ordinal),
            Postgres - before.Postgres, Client - before.Client, MachineBusy - before.MachineBusy, MachineTotal - before.MachineTotal);

        /// <summary>One line: CPU milliseconds per backup of each group, and how busy the machine was meanwhile.</summary>
        public string PerBackup(int backups)
        {
            var ours = SilosTotal + Postgres + Client;
            var silos = string.Join(" ", Silos.OrderBy(s => s.Key, StringComparer.Ordinal).Select(s => Ms(s.Value, backups)));
            return string.Create(CultureInfo.InvariantCulture,
                $"CPU ms/backup: silos {Ms(SilosTotal, backups)} ({silos}) + postgres {Ms(Postgres, backups)} + client {Ms(Client, backups)} = {Ms(ours, backups)}; "
                + $"machine busy {MachineBusy:F1} of {MachineTotal:F1} CPU s ({(MachineBusy - ours) / Math.Max(MachineTotal, 1e-9) * 100:F0}% by others)");
        }

        private static string Ms(double seconds, int backups) => (seconds * 1000 / backups).ToString("F2", CultureInfo.InvariantCulture);
    }

    public Sample Take()
    {
        var s = silos.ToDictionary(x => x.Name, x => ProcessSeconds(x.Pid, children: false), StringComparer.Ordinal);
        var pg = ProcessSeconds(postmasterPid, children: true);
        foreach (var child in ChildrenOf(postmasterPid))
        {
            pg += ProcessSeconds(child, children: false, missingIsZero: true);
        }

        var client = Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds;
        var (busy, total) = MachineSeconds();
        return new Sample(s, pg, client, busy, total);
    }

    /// <summary>utime + stime (and cutime + cstime when asked) of one process, in seconds.</summary>
    private static double ProcessSeconds(int pid, bool children, bool missingIsZero = false)
    {
        string stat;
        try
        {
            stat = File.ReadAllText($"/proc/{pid}/stat");
        }
        catch (IOException) when (missingIsZero)
        {
            return 0; // a backend that exited between the listing and this read: its time is in the postmaster's cutime
        }

        // The command name (field 2) is in parentheses and may hold spaces: fields are counted after the last ')'.
        var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        long Field(int n) => long.Parse(f[n - 3], CultureInfo.InvariantCulture); // n: 1-based field number of proc(5)
        var ticks = Field(14) + Field(15) + (children ? Field(16) + Field(17) : 0);
        return ticks / TicksPerSecond;
    }

    private static IEnumerable<int> ChildrenOf(int parent)
    {
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
            {
                continue;
            }

            string stat;
            try
            {
                stat = File.ReadAllText(Path.Combine(dir, "stat"));
            }
            catch (IOException)
            {
                continue;
            }

            var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            if (f.Length > 1 && f[1] == parent.ToString(CultureInfo.InvariantCulture))
            {
                yield return pid;
            }
        }
    }

    /// <summary>The machine's busy and total CPU seconds (all cores) from /proc/stat's first line.</summary>
    private static (double Busy, double Total) MachineSeconds()
    {
        var cpu = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1)
            .Select(v => long.Parse(v, CultureInfo.InvariantCulture)).ToArray();
        // user nice system idle iowait irq softirq steal (guest times are already inside user/nice)
        var idle = cpu[3] + cpu[4];
        var total = cpu.Take(8).Sum();
        return ((total - idle) / TicksPerSecond, total / TicksPerSecond);
    }

    private static double ReadTicksPerSecond()
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo("getconf", "CLK_TCK") { RedirectStandardOutput = true, UseShellExecute = false });
            if (p is not null && p.WaitForExit(5_000) && double.TryParse(p.StandardOutput.ReadToEnd().Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var hz) && hz > 0)
            {
                return hz;
            }
        }
        catch (System.ComponentModel.Win32Exception)
        {
            // no getconf: the kernel's USER_HZ is 100 on every architecture .NET runs on
        }

        return 100;
    }
}
