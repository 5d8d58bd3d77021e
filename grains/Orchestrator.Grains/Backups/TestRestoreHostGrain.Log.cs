using Microsoft.Extensions.Logging;

namespace Orchestrator.Grains.Backups;

internal sealed partial class TestRestoreHostGrain
{
    [LoggerMessage(Level = LogLevel.Information, Message = "Test restore {Test} of {Vm} ({Run}) starts on host {Host} as {Domain}")]
    private static partial void LogTestStarted(ILogger logger, string test, string vm, string run, string host, string domain);

    [LoggerMessage(Level = LogLevel.Information, Message = "Test restore {Test} on host {Host} ({Domain}) ended {Outcome}, cleaned up {CleanedUp}: {Reason}")]
    private static partial void LogTestEnded(ILogger logger, string test, string host, string domain, TestRestoreOutcome outcome, bool cleanedUp, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Test restore {Test} on host {Host} was cut short by a stopped silo; its throwaway VM {Domain} and files are removed now")]
    private static partial void LogTestInterrupted(ILogger logger, string test, string host, string domain);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Clean-up of test restore {Test} on host {Host} failed (retried with the next reconcile): {Error}")]
    private static partial void LogCleanupFailed(ILogger logger, string test, string host, string error);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Test restore {Test}: VM {Vm} not told of its end yet (retried): {Error}")]
    private static partial void LogTellFailed(ILogger logger, string test, string vm, string error);
}
