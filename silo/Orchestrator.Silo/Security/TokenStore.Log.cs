namespace Orchestrator.Silo.Security;

internal sealed partial class TokenStore
{
    [LoggerMessage(Level = LogLevel.Information, Message = "Tokens file {Path}: {Count} tokens")]
    private static partial void LogLoaded(ILogger logger, string path, int count);

    [LoggerMessage(Level = LogLevel.Error, Message = "Tokens file {Path} not re-read: {Reason}; the {Count} tokens read before stay in force")]
    private static partial void LogReloadFailed(ILogger logger, string path, string reason, int count);
}
