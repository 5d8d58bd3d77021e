using Microsoft.Extensions.Logging;

namespace Orchestrator.Hypervisor.Libvirt;

public sealed partial class LibvirtHypervisor
{
    private static partial class Log
    {
        [LoggerMessage(EventId = 1040, Level = LogLevel.Warning, Message = "Backing chain of inactive {Domain}/{Target} not described below {Path}: {Reason}")]
        public static partial void OfflineChainUnread(ILogger logger, string domain, string target, string path, string reason);

        [LoggerMessage(EventId = 1000, Level = LogLevel.Information, Message = "Connected to {Uri} in {ElapsedMs} ms")]
        public static partial void Connected(ILogger logger, string uri, long elapsedMs);

        [LoggerMessage(EventId = 1001, Level = LogLevel.Warning, Message = "Connection to {Uri} closed by libvirt (reason {Reason})")]
        public static partial void ConnectionClosed(ILogger logger, string uri, int reason);

        [LoggerMessage(EventId = 1002, Level = LogLevel.Information, Message = "Reconnected to {Uri} (attempt {Attempt}); event callbacks registered again")]
        public static partial void Reconnected(ILogger logger, string uri, int attempt);

        [LoggerMessage(EventId = 1003, Level = LogLevel.Warning, Message = "Reconnect to {Uri} failed (attempt {Attempt}): {Reason}")]
        public static partial void ReconnectFailed(ILogger logger, string uri, int attempt, string reason);

        [LoggerMessage(EventId = 1004, Level = LogLevel.Warning, Message = "{What} on {Uri} did not return within {Seconds:F0} s")]
        public static partial void CallTimedOut(ILogger logger, string uri, string what, double seconds);

        [LoggerMessage(EventId = 1010, Level = LogLevel.Debug, Message = "Lifecycle event {Domain}: {Type} (detail {Detail})")]
        public static partial void LifecycleEvent(ILogger logger, string domain, LifecycleEventType type, int detail);

        [LoggerMessage(EventId = 1011, Level = LogLevel.Debug, Message = "Block job event {Domain}/{Target}: {Job} {Status}")]
        public static partial void BlockJobEvent(ILogger logger, string domain, string target, BlockJobKind job, BlockJobEventStatus status);

        [LoggerMessage(EventId = 1012, Level = LogLevel.Error, Message = "A DomainEvent handler threw for {Domain} ({Kind})")]
        public static partial void EventHandlerFailed(ILogger logger, Exception exception, string domain, DomainEventKind kind);

        [LoggerMessage(EventId = 1020, Level = LogLevel.Information, Message = "Created {Count} overlay(s) on {Domain} in {ElapsedMs:F1} ms")]
        public static partial void OverlaysCreated(ILogger logger, string domain, int count, double elapsedMs);

        [LoggerMessage(EventId = 1021, Level = LogLevel.Information, Message = "Active commit started on {Domain}/{Target} (top {Top})")]
        public static partial void CommitStarted(ILogger logger, string domain, string target, string top);

        [LoggerMessage(EventId = 1022, Level = LogLevel.Information, Message = "Block job on {Domain}/{Target} ready after {ElapsedMs:F1} ms (by {Source})")]
        public static partial void CommitReady(ILogger logger, string domain, string target, double elapsedMs, string source);

        [LoggerMessage(EventId = 1023, Level = LogLevel.Information, Message = "Block job on {Domain}/{Target} ended by {How} in {ElapsedMs:F1} ms")]
        public static partial void BlockJobEnded(ILogger logger, string domain, string target, string how, double elapsedMs);

        [LoggerMessage(EventId = 1024, Level = LogLevel.Warning, Message = "Block job on {Domain}/{Target} is gone but no end event arrived; treating it as ended")]
        public static partial void BlockJobEndedWithoutEvent(ILogger logger, string domain, string target);

        [LoggerMessage(EventId = 1030, Level = LogLevel.Information, Message = "Internal snapshot {Name} of {Domain} created (memory: {HasMemory}) in {ElapsedMs:F1} ms")]
        public static partial void InternalSnapshotCreated(ILogger logger, string domain, string name, bool hasMemory, double elapsedMs);

        [LoggerMessage(EventId = 1031, Level = LogLevel.Information, Message = "{Operation} on {Domain} snapshot {Name} took {ElapsedMs:F1} ms")]
        public static partial void SnapshotOperation(ILogger logger, string operation, string domain, string name, double elapsedMs);
    }
}
