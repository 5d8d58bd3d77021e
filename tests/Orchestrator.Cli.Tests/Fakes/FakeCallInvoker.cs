using Google.Protobuf;
using Grpc.Core;

namespace Orchestrator.Cli.Tests.Fakes;

/// <summary>
/// Answers unary and server-streaming calls from handlers registered by method name, and records every
/// call, so commands run end to end without a server. A handler may throw an RpcException to play a
/// failing server.
/// </summary>
internal sealed class FakeCallInvoker : CallInvoker
{
    private readonly Dictionary<string, Func<object, object>> _handlers = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Func<object, CancellationToken, object>> _streams = new(StringComparer.Ordinal);

    public List<RecordedCall> Calls { get; } = [];

    public FakeCallInvoker On<TRequest, TResponse>(string methodName, Func<TRequest, TResponse> handler)
    {
        _handlers[methodName] = request => handler((TRequest)request)!;
        return this;
    }

    /// <summary>
    /// A server stream: the messages <paramref name="handler"/> yields, then the end of the stream (or the
    /// exception it throws). The token is the call's: cancelling the call cancels the enumeration.
    /// </summary>
    public FakeCallInvoker OnStream<TRequest, TResponse>(
        string methodName, Func<TRequest, CancellationToken, IAsyncEnumerable<TResponse>> handler)
    {
        _streams[methodName] = (request, cancellationToken) => handler((TRequest)request, cancellationToken);
        return this;
    }

    /// <summary>A server stream of the given messages, sent at once, then the end of the stream.</summary>
    public FakeCallInvoker OnStream<TRequest, TResponse>(string methodName, params TResponse[] responses) =>
        OnStream<TRequest, TResponse>(methodName, (_, _) => responses.ToAsyncEnumerable());

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
        Method<TRequest, TResponse> method, string? host, CallOptions options, TRequest request)
    {
        Calls.Add(new RecordedCall(method.Name, (IMessage)request, options));
        var messages = _streams.TryGetValue(method.Name, out Func<object, CancellationToken, object>? handler)
            ? (IAsyncEnumerable<TResponse>)handler(request, options.CancellationToken)
            : Unimplemented<TResponse>(method.Name);
        var reader = new StreamReader<TResponse>(messages.GetAsyncEnumerator(options.CancellationToken), options.CancellationToken);
        return new AsyncServerStreamingCall<TResponse>(
            reader, Task.FromResult(new Metadata()), () => Status.DefaultSuccess, () => [], () => { });
    }

    public override AsyncClientStreamingCall<TRequest, TResponse> AsyncClientStreamingCall<TRequest, TResponse>(
        Method<TRequest, TResponse> method, string? host, CallOptions options) =>
        throw new NotSupportedException();

    public override AsyncDuplexStreamingCall<TRequest, TResponse> AsyncDuplexStreamingCall<TRequest, TResponse>(
        Method<TRequest, TResponse> method, string? host, CallOptions options) =>
        throw new NotSupportedException();

    private static async IAsyncEnumerable<T> Unimplemented<T>(string methodName)
    {
        await Task.Yield();
        throw new RpcException(new Status(StatusCode.Unimplemented, $"no fake handler for {methodName}"));
#pragma warning disable CS0162 // An iterator needs a yield to be one.
        yield break;
#pragma warning restore CS0162
    }

    /// <summary>Reads a stream the way Grpc.Net.Client does: a cancelled call fails with status Cancelled.</summary>
    private sealed class StreamReader<T>(IAsyncEnumerator<T> messages, CancellationToken callToken) : IAsyncStreamReader<T>
    {
        public T Current => messages.Current;

        public async Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            using var either = CancellationTokenSource.CreateLinkedTokenSource(callToken, cancellationToken);
            try
            {
                return await messages.MoveNextAsync().AsTask().WaitAsync(either.Token);
            }
            catch (OperationCanceledException)
            {
                throw new RpcException(new Status(StatusCode.Cancelled, "Call canceled by the client."));
            }
        }
    }
}

internal sealed record RecordedCall(string Method, IMessage Request, CallOptions Options);
