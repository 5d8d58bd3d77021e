namespace Orchestrator.Silo.Security;

internal sealed partial class ClientCertificateTrust
{
    [LoggerMessage(Level = LogLevel.Warning, Message = "Client certificate '{Subject}' refused: it does not chain to Orchestrator:Security:Tls:ClientCaPath ({Reason})")]
    private static partial void LogRefused(ILogger logger, string subject, string reason);
}
