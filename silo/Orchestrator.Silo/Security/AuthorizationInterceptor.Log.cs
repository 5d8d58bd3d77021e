namespace Orchestrator.Silo.Security;

internal sealed partial class AuthorizationInterceptor
{
    [LoggerMessage(EventId = 4100, Level = LogLevel.Information, Message = "audit: {Method} by {Caller} (role {Role}, via {Via}) from {Peer}: {Outcome}")]
    private static partial void LogAudit(ILogger logger, string method, string caller, string role, string via, string peer, string outcome);

    [LoggerMessage(EventId = 4101, Level = LogLevel.Warning, Message = "refused {Method} from {Peer}: not authenticated: {Problem}")]
    private static partial void LogUnauthenticated(ILogger logger, string method, string peer, string problem);

    [LoggerMessage(EventId = 4102, Level = LogLevel.Warning, Message = "denied {Method} to {Caller} (role {Role}, needs {Required}) from {Peer}")]
    private static partial void LogDenied(ILogger logger, string method, string caller, string role, string required, string peer);

    [LoggerMessage(EventId = 4103, Level = LogLevel.Error, Message = "refused {Method} to {Caller}: the method has no entry in RpcRoles.Table")]
    private static partial void LogNotInTable(ILogger logger, string method, string caller);
}
