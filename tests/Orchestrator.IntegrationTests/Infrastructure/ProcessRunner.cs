using System.Diagnostics;
using System.Text;

namespace Orchestrator.IntegrationTests.Infrastructure;

public sealed record ProcessResult(int ExitCode, string StandardOutput, string StandardError);

/// <summary>Runs a program with an argument list (never a shell) and collects its output.</summary>
public static class ProcessRunner
{
    public static async Task<ProcessResult> RunAsync(string program, IEnumerable<string> arguments, IDictionary<string, string?>? environment = null, TimeSpan? timeout = null)
    {
        var info = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in arguments)
        {
            info.ArgumentList.Add(a);
        }

        foreach (var (key, value) in environment ?? new Dictionary<string, string?>())
        {
            info.Environment[key] = value;
        }

        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromMinutes(2));
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} {string.Join(' ', arguments)} did not finish in time");
        }

        return new ProcessResult(process.ExitCode, await stdout, await stderr);
    }

    public static Task<ProcessResult> RunScriptAsync(string script, params string[] arguments) =>
        RunAsync("bash", [Repo.Script(script), .. arguments], timeout: TimeSpan.FromMinutes(5));

    public static string Describe(ProcessResult r)
    {
        var text = new StringBuilder();
        text.Append("exit ").Append(r.ExitCode).AppendLine();
        text.AppendLine("stdout: " + r.StandardOutput);
        text.AppendLine("stderr: " + r.StandardError);
        return text.ToString();
    }
}
