using Grpc.Core;
using Grpc.Core.Interceptors;
using Orchestrator.Hypervisor;

namespace Orchestrator.Silo.Services;

/// <summary>
/// Checks every request's shape first (<see cref="RequestShape"/>); every orchestrator or hypervisor error leaves the
/// server as a gRPC status with details, its texts capped (<see cref="ErrorMapping.Cap"/>) in the reply and the log.
/// </summary>
internal sealed partial class ErrorInterceptor(ILogger<ErrorInterceptor> logger) : Interceptor
{
    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            CheckShape(request);
            return await continuation(request, context);
        }
        catch (Exception e) when (Map(e, context) is { } mapped)
        {
            throw mapped;
        }
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            CheckShape(request);
            await continuation(request, responseStream, context);
        }
        catch (Exception e) when (Map(e, context) is { } mapped)
        {
            throw mapped;
        }
    }

    private RpcException? Map(Exception e, ServerCallContext context)
    {
        var mapped = e switch
        {
            OrchestratorException o => ErrorMapping.ToRpcException(o),
            HypervisorException h => ErrorMapping.ToRpcException(h),
            // E.g. a grain whose stored state cannot be read: Orleans wraps the storage error.
            Orleans.Runtime.OrleansException { InnerException: OrchestratorException o } => ErrorMapping.ToRpcException(o),
            _ => null,
        };
        if (mapped is not null)
        {
            LogRequestFailed(logger, context.Method, mapped.StatusCode, mapped.Status.Detail);
        }

        return mapped;
    }

    private static void CheckShape<TRequest>(TRequest request)
    {
        if (request is Google.Protobuf.IMessage message)
        {
            RequestShape.Check(message);
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "{Method} failed with {Code}: {Reason}")]
    private static partial void LogRequestFailed(ILogger logger, string method, StatusCode code, string reason);
}
