using Google.Protobuf;
using Grpc.Core;

namespace Orchestrator.Cli.Tests.Fakes;

/// <summary>
/// Answers unary calls from handlers registered by method name, and records every call, so commands run
/// end to end without a server. A handler may throw an RpcException to play a failing server.
/// </summary>
internal sealed class FakeCallInvoker : CallInvoker
{
    private readonly Dictionary<string, Func<object, object>> _handlers = new(StringComparer.Ordinal);

    public List<RecordedCall> Calls { get; } = [];

    public FakeCallInvoker On<TRequest, TResponse>(string methodName, Func<TRequest, TResponse> handler)
    {
        _handlers[methodName] = request => handler((TRequest)request)!;
        return this;
    }

    public FakeCallInvoker Fail(string methodName, RpcException exception)
    {
        _handlers[methodName] = _ => throw exception;
        return this;
    }

    public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(
        Method<TRequest, TResponse> method, string? host, CallOptions options, TRequest request)
    {
        Calls.Add(new RecordedCall(method.Name, (IMessage)request, options));
        Task<TResponse> response;
        try
        {
            response = _handlers.TryGetValue(method.Name, out Func<object, object>? handler)
                ? Task.FromResult((TResponse)handler(request))
                : throw new RpcException(new Status(StatusCode.Unimplemented, $"no fake handler for {method.Name}"));
        }
        catch (RpcException exception)
        {
            response = Task.FromException<TResponse>(exception);
        }

        return new AsyncUnaryCall<TResponse>(
            response, Task.FromResult(new Metadata()), () => Status.DefaultSuccess, () => [], () => { });
    }

    public override TResponse BlockingUnaryCall<TRequest, TResponse>(
        Method<TRequest, TResponse> method, string? host, CallOptions options, TRequest request) =>
        throw new NotSupportedException("The CLI makes async calls only.");

    public override AsyncServerStreamingCall<TResponse> AsyncServerStreamingCall<TRequest, TResponse>(
        Method<TRequest, TResponse> method, string? host, CallOptions options, TRequest request) =>
        throw new NotSupportedException();

    public override AsyncClientStreamingCall<TRequest, TResponse> AsyncClientStreamingCall<TRequest, TResponse>(
        Method<TRequest, TResponse> method, string? host, CallOptions options) =>
        throw new NotSupportedException();

    public override AsyncDuplexStreamingCall<TRequest, TResponse> AsyncDuplexStreamingCall<TRequest, TResponse>(
        Method<TRequest, TResponse> method, string? host, CallOptions options) =>
        throw new NotSupportedException();
}

internal sealed record RecordedCall(string Method, IMessage Request, CallOptions Options);
