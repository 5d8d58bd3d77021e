namespace Orchestrator.IntegrationTests.Infrastructure;

/// <summary>
/// The Debian tools the deployment tests run (systemd-analyze, promtool, prometheus). A missing one is installed with
/// tests/infra/ops-tools.sh; if that fails the test fails with its output: never a silent skip.
/// </summary>
public static class OpsTools
{
    private static readonly SemaphoreSlim Gate = new(1, 1);

    /// <summary>The absolute path of <paramref name="tool"/>, installing its package first when it is missing.</summary>
    public static async Task<string> RequireAsync(string tool)
    {
        if (Find(tool) is { } found)
        {
            return found;
        }

        await Gate.WaitAsync();
        try
        {
            if (Find(tool) is { } again)
            {
                return again;
            }

            var install = await ProcessRunner.RunAsync("bash", [Repo.Script("tests/infra/ops-tools.sh"), "install"], timeout: TimeSpan.FromMinutes(5));
            return Find(tool) ?? throw new InvalidOperationException(
                $"{tool} is not installed and tests/infra/ops-tools.sh could not install it (run it as root):\n{ProcessRunner.Describe(install)}");
        }
        finally
        {
            Gate.Release();
        }
    }

    private static string? Find(string tool) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin")
            .Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Append("/usr/sbin").Append("/usr/bin")
            .Select(dir => Path.Combine(dir, tool))
            .FirstOrDefault(File.Exists);
}
