using System.Diagnostics;

namespace Orchestrator.Bench;

/// <summary>Runs the repository's lab scripts (tests/lab) and other tools; measures wall time.</summary>
internal sealed class LabScripts
{
    public LabScripts()
    {
        var repo = FindRepoRoot();
        ScriptsDir = Environment.GetEnvironmentVariable("ORCH_LAB_SCRIPTS") is { Length: > 0 } s ? s : Path.Combine(repo, "tests", "lab");
        LabDir = Environment.GetEnvironmentVariable("LAB_DIR") is { Length: > 0 } d ? d : Path.Combine(repo, ".lab");
    }

    public string ScriptsDir { get; }

    public string LabDir { get; }

    public Task<string> ScriptAsync(string script, params string[] args) => RunCheckedAsync(Path.Combine(ScriptsDir, script), args);

    /// <summary>Runs a program, returns its stdout; throws with its stderr when it fails.</summary>
    public async Task<string> RunCheckedAsync(string file, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        psi.Environment["LAB_DIR"] = LabDir;
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {file}");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        await p.WaitForExitAsync();
        if (p.ExitCode != 0)
        {
            throw new InvalidOperationException($"{file} {string.Join(' ', psi.ArgumentList)} failed (exit {p.ExitCode}): {await stderr}");
        }

        return await stdout;
    }

    internal static string FindRepoRoot()
    {
        foreach (var start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Orchestrator.sln")))
                {
                    return dir.FullName;
                }
            }
        }

        throw new InvalidOperationException("Orchestrator.sln not found: run from the repository");
    }
}
