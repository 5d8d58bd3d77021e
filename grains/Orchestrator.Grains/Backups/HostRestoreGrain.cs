using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orchestrator.Grains.Placement;
using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.Backups;

/// <summary>
/// Restores on this grain's host (key: that host; placed on its silo): the <see cref="RestoreEngine"/> run there, with
/// a trace span and a log line. Restores on one host run one at a time (the grain is not reentrant).
/// </summary>
[HostAffinePlacement]
internal sealed partial class HostRestoreGrain(
    IHypervisor hypervisor,
    IOptions<BackupOptions> backupOptions,
    ILogger<HostRestoreGrain> logger) : Grain, IHostRestoreGrain
{
    private string Host => this.GetPrimaryKeyString();

    public async Task<RestoreResult> RestoreAsync(RestoreRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var (source, vm, runId) = RestoreEngine.Validate(request, Host);
        var started = Stopwatch.GetTimestamp();
        using var activity = Telemetry.Source.StartActivity("backup.restore");
        activity?.SetTag("host", Host);
        activity?.SetTag("source_host", source);
        activity?.SetTag("vm", vm);
        activity?.SetTag("run", runId);
        var engine = new RestoreEngine(Host, hypervisor, backupOptions.Value);
        try
        {
            var result = await engine.ExecuteAsync(await engine.PlanAsync(request, null, cancellationToken), cancellationToken);
            var seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
            activity?.SetTag("seconds", seconds);
            LogRestored(logger, request.RunKey, Host, request.NewName, result.Images.Count, result.Defined, result.Started, seconds);
            return result;
        }
        catch (Exception e)
        {
            LogRestoreFailed(logger, request.RunKey, Host, request.NewName, e.Message);
            throw;
        }
    }

    public async Task<BackupVerifyResult> VerifyAsync(string runKey, CancellationToken cancellationToken = default)
    {
        BackupRunKeys.Parse(runKey, "key");
        using var activity = Telemetry.Source.StartActivity("backup.verify");
        activity?.SetTag("host", Host);
        activity?.SetTag("run", runKey);
        var sets = await BackupChain.VerifyAsync(runKey, backupOptions.Value, hypervisor.Images, cancellationToken);
        var passed = sets.All(s => s.Passed);
        activity?.SetTag("passed", passed);
        LogVerified(logger, runKey, Host, sets.Count, passed);
        return new BackupVerifyResult(runKey, Host, passed, sets);
    }
}
