using System.Diagnostics;
using System.Security.Cryptography.X509Certificates;
using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Orchestrator.Silo.Security;

/// <summary>
/// The first interceptor of every gRPC call: recognises the caller (<see cref="CallAuthenticator"/>), looks up the
/// method's lowest role in <see cref="RpcRoles.Table"/> and refuses with UNAUTHENTICATED or PERMISSION_DENIED before
/// anything runs. The caller's name and role go on the request's span (enduser.id, enduser.role); every call that
/// changes something is written to the audit log with its caller and outcome. Tokens are never logged.
/// </summary>
internal sealed partial class AuthorizationInterceptor(CallAuthenticator authenticator, ILogger<AuthorizationInterceptor> logger) : Interceptor
{
    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(
        TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation) =>
        RunAsync(context, () => continuation(request, context));

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(
        TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation) =>
        RunAsync(context, async () =>
        {
            await continuation(request, responseStream, context);
            return true;
        });

    public override Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(
        IAsyncStreamReader<TRequest> requestStream, ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation) =>
        RunAsync(context, () => continuation(requestStream, context));

    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(
        IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation) =>
        RunAsync(context, async () =>
        {
            await continuation(requestStream, responseStream, context);
            return true;
        });

    /// <summary>Refuses the call (throws) unless the caller holds the method's role; returns who it is.</summary>
    internal Caller Authorize(ServerCallContext context, out Role required)
    {
        var method = context.Method;
        var authentication = authenticator.Authenticate(context.RequestHeaders.Get("authorization")?.Value, ClientCertificate(context));
        if (authentication.Caller is not { } caller)
        {
            LogUnauthenticated(logger, method, context.Peer, authentication.Problem!);
            throw SecurityErrors.Unauthenticated(method, authentication.Problem!);
        }

        Activity.Current?.SetTag("enduser.id", caller.Name).SetTag("enduser.role", caller.Role.Name()).SetTag("orchestrator.auth", caller.Via);
        if (RpcRoles.Required(method) is not { } role)
        {
            LogNotInTable(logger, method, caller.Name);
            throw SecurityErrors.NotInRoleTable(method);
        }

        required = role;
        if (caller.Role < role)
        {
            LogDenied(logger, method, caller.Name, caller.Role.Name(), role.Name(), context.Peer);
            throw SecurityErrors.PermissionDenied(method, caller, role);
        }

        return caller;
    }

    private async Task<T> RunAsync<T>(ServerCallContext context, Func<Task<T>> call)
    {
        var caller = Authorize(context, out var required);
        if (!RpcRoles.IsMutating(required))
        {
            return await call();
        }

        try
        {
            var result = await call();
            LogAudit(logger, context.Method, caller.Name, caller.Role.Name(), caller.Via, context.Peer, nameof(StatusCode.OK));
            return result;
        }
        catch (Exception e)
        {
            LogAudit(logger, context.Method, caller.Name, caller.Role.Name(), caller.Via, context.Peer, e is RpcException rpc ? rpc.StatusCode.ToString() : e.GetType().Name);
            throw;
        }
    }

    /// <summary>The client certificate Kestrel accepted on this connection (mutual TLS), if any.</summary>
    private static X509Certificate2? ClientCertificate(ServerCallContext context)
    {
        try
        {
            return context.GetHttpContext().Connection.ClientCertificate;
        }
        catch (InvalidOperationException)
        {
            return null; // not hosted by ASP.NET Core
        }
    }
}
