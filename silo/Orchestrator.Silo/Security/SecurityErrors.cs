using Google.Protobuf.WellKnownTypes;
using Google.Rpc;
using Grpc.Core;
using Orchestrator.Silo.Services;

namespace Orchestrator.Silo.Security;

/// <summary>Refusals as google.rpc.Status with an ErrorInfo, like every other orchestrator error.</summary>
internal static class SecurityErrors
{
    public const string UnauthenticatedReason = "UNAUTHENTICATED";
    public const string PermissionDeniedReason = "PERMISSION_DENIED";

    public static RpcException Unauthenticated(string method, string problem) =>
        Build(Code.Unauthenticated, $"not authenticated: {problem}", UnauthenticatedReason, new() { ["method"] = method });

    public static RpcException PermissionDenied(string method, Caller caller, Role required) =>
        Build(
            Code.PermissionDenied,
            $"permission denied: {ShortName(method)} needs role {required.Name()}; {caller.Name} has role {caller.Role.Name()}",
            PermissionDeniedReason,
            new() { ["method"] = method, ["required_role"] = required.Name(), ["role"] = caller.Role.Name(), ["caller"] = caller.Name });

    /// <summary>A method the role table lacks: refused to everybody, so a forgotten RPC is never open.</summary>
    public static RpcException NotInRoleTable(string method) =>
        Build(Code.PermissionDenied, $"permission denied: {method} has no entry in the role table, so nobody may call it", PermissionDeniedReason, new() { ["method"] = method });

    /// <summary>"/orchestrator.v1.BackupService/StartBackup" reads "BackupService/StartBackup".</summary>
    public static string ShortName(string method)
    {
        var trimmed = method.TrimStart('/');
        var slash = trimmed.IndexOf('/', StringComparison.Ordinal);
        var service = slash < 0 ? trimmed : trimmed[..slash];
        var dot = service.LastIndexOf('.');
        return dot < 0 ? trimmed : trimmed[(dot + 1)..];
    }

    private static RpcException Build(Code code, string message, string reason, Dictionary<string, string> metadata)
    {
        var info = new ErrorInfo { Reason = reason, Domain = ErrorMapping.Domain };
        info.Metadata.Add(metadata);
        var status = new Google.Rpc.Status { Code = (int)code, Message = message };
        status.Details.Add(Any.Pack(info));
        return status.ToRpcException();
    }
}
