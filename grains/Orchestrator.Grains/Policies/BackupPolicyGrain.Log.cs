using Microsoft.Extensions.Logging;

namespace Orchestrator.Grains.Policies;

internal sealed partial class BackupPolicyGrain
{
    [LoggerMessage(Level = LogLevel.Information, Message = "Policy {Policy}: version {Version} applied (created: {Created})")]
    private static partial void LogApplied(ILogger logger, string policy, int version, bool created);

    [LoggerMessage(Level = LogLevel.Information, Message = "Policy {Policy}: {Runs} runs stored in the hot state by an earlier version moved out ({Finished} finished ones to the history)")]
    private static partial void LogLegacyRunsMigrated(ILogger logger, string policy, int runs, int finished);

    [LoggerMessage(Level = LogLevel.Information, Message = "Policy {Policy}: deleted")]
    private static partial void LogDeleted(ILogger logger, string policy);

    [LoggerMessage(Level = LogLevel.Information, Message = "Policy {Policy}: run {Run} started ({Trigger}, {Targets} VMs)")]
    private static partial void LogRunStarted(ILogger logger, string policy, string run, PolicyRunTrigger trigger, int targets);

    [LoggerMessage(Level = LogLevel.Information, Message = "Policy {Policy}: run {Run} ended {State}, {Succeeded} of {Targets} VMs succeeded")]
    private static partial void LogRunFinished(ILogger logger, string policy, string run, PolicyRunState state, int succeeded, int targets);

    [LoggerMessage(Level = LogLevel.Information, Message = "Policy {Policy}: run {Run}: part on {Host} ended, {Succeeded} of {Targets} VMs succeeded")]
    private static partial void LogPartEnded(ILogger logger, string policy, string run, string host, int succeeded, int targets);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Policy {Policy}: run {Run}: part on {Host} not reached (the next tick tries again): {Reason}")]
    private static partial void LogPartUnreachable(ILogger logger, string policy, string run, string host, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Policy {Policy}: run {Run}: part on {Host} no longer knows the run; its VMs count as failed")]
    private static partial void LogPartLost(ILogger logger, string policy, string run, string host);

    [LoggerMessage(Level = LogLevel.Information, Message = "Policy {Policy}: run {Run} (stored before per-host parts) handed to {Parts} parts")]
    private static partial void LogRunMigrated(ILogger logger, string policy, string run, int parts);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Policy {Policy}: tick failed: {Reason}")]
    private static partial void LogTickFailed(ILogger logger, string policy, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Policy {Policy}: reminder registration failed: {Reason}")]
    private static partial void LogReminderFailed(ILogger logger, string policy, string reason);
}
