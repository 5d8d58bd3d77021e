using System.Diagnostics;
using System.Text;

namespace Orchestrator.Hypervisor.QemuImg;

/// <summary>The outcome of a finished tool process.</summary>
internal sealed record ToolResult(int ExitCode, string StandardOutput, string StandardError);

/// <summary>
/// Runs a program with an argument list (no shell, no string splitting), within a time bound. Cancellation kills the
/// process tree and surfaces as <see cref="OperationCanceledException"/>; running past <c>timeout</c> kills the process
/// tree too and surfaces as <see cref="HypervisorException"/> of kind <see cref="HypervisorErrorKind.Timeout"/>.
/// </summary>
internal static class ToolRunner
{
    /// <param name="onStandardOutputChunk">Called with raw output as it arrives (e.g. for "\r"-separated progress).</param>
    internal static async Task<ToolResult> RunAsync(
        string fileName,
        IEnumerable<string> arguments,
        Action<string>? onStandardOutputChunk,
        TimeSpan timeout,
        CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(timeout, TimeSpan.Zero);
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
        using var bound = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        bound.CancelAfter(timeout);
        try
        {
            await process.WaitForExitAsync(bound.Token).ConfigureAwait(false);
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

            // Bounded too: a process stuck in the kernel (D state) may not die at once; do not wait for it forever.
            using (var reap = new CancellationTokenSource(TimeSpan.FromSeconds(10)))
            {
                try
                {
                    await process.WaitForExitAsync(reap.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                }
            }

            if (cancellationToken.IsCancellationRequested)
            {
                throw;
            }

            throw new HypervisorException(
                HypervisorErrorKind.Timeout,
                $"{Path.GetFileName(fileName)} {string.Join(' ', psi.ArgumentList.Take(1))} ran longer than its bound of {timeout.TotalSeconds:F0} s and was killed");
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
