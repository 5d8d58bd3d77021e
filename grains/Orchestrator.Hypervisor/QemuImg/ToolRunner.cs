using System.Diagnostics;
using System.Text;

namespace Orchestrator.Hypervisor.QemuImg;

/// <summary>The outcome of a finished tool process.</summary>
internal sealed record ToolResult(int ExitCode, string StandardOutput, string StandardError);

/// <summary>
/// Runs a program with an argument list (no shell, no string splitting). Cancellation kills the process tree and
/// surfaces as <see cref="OperationCanceledException"/>.
/// </summary>
internal static class ToolRunner
{
    /// <param name="onStandardOutputChunk">Called with raw output as it arrives (e.g. for "\r"-separated progress).</param>
    internal static async Task<ToolResult> RunAsync(
        string fileName,
        IEnumerable<string> arguments,
        Action<string>? onStandardOutputChunk,
        CancellationToken cancellationToken)
    {
        var psi = new ProcessStartInfo(fileName)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = false,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        foreach (var argument in arguments)
        {
            psi.ArgumentList.Add(argument);
        }

        // Messages we parse must not be translated.
        psi.Environment["LC_ALL"] = "C";

        using var process = new Process { StartInfo = psi };
        try
        {
            process.Start();
        }
        catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            throw new HypervisorException(HypervisorErrorKind.ToolFailed, $"cannot start {fileName}: {ex.Message}", inner: ex);
        }

        var stdout = ReadAllAsync(process.StandardOutput, onStandardOutputChunk);
        var stderr = ReadAllAsync(process.StandardError, null);
        try
        {
            await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            try
            {
                process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
                // Exited on its own meanwhile.
            }

            await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
            throw;
        }

        return new ToolResult(process.ExitCode, await stdout.ConfigureAwait(false), await stderr.ConfigureAwait(false));
    }

    private static async Task<string> ReadAllAsync(StreamReader reader, Action<string>? onChunk)
    {
        var all = new StringBuilder();
        var buffer = new char[4096];
        int n;
        while ((n = await reader.ReadAsync(buffer.AsMemory()).ConfigureAwait(false)) > 0)
        {
            var chunk = new string(buffer, 0, n);
            all.Append(chunk);
            onChunk?.Invoke(chunk);
        }

        return all.ToString();
    }
}
