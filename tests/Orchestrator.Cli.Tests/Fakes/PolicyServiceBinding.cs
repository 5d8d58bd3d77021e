using Google.Protobuf;
using Grpc.Core;
using Orchestrator.Api.V1;

namespace Orchestrator.Cli.Tests.Fakes;

/// <summary>
/// PolicyService bound by hand with the CLI's message types, for the reason given on
/// <see cref="FleetServiceBinding"/>. Only the calls the fake server plays.
/// </summary>
[BindServiceMethod(typeof(PolicyServiceBinding), nameof(BindService))]
internal abstract class PolicyServiceBinding
{
    private const string ServiceName = "orchestrator.v1.PolicyService";

    public static void BindService(ServiceBinderBase binder, PolicyServiceBinding? service)
    {
        binder.AddMethod(
            Method(MethodType.Unary, ApplyPolicyRequest.Parser, ApplyPolicyResponse.Parser, "ApplyPolicy"),
            service is null ? null! : service.ApplyPolicy);
        binder.AddMethod(
            Method(MethodType.ServerStreaming, WatchPolicyRunRequest.Parser, WatchPolicyRunResponse.Parser, "WatchPolicyRun"),
            service is null ? null! : service.WatchPolicyRun);
    }

    public virtual Task<ApplyPolicyResponse> ApplyPolicy(ApplyPolicyRequest request, ServerCallContext context) => throw Unimplemented();

    public virtual Task WatchPolicyRun(WatchPolicyRunRequest request, IServerStreamWriter<WatchPolicyRunResponse> responseStream, ServerCallContext context) =>
        throw Unimplemented();

    private static RpcException Unimplemented() => new(new Status(StatusCode.Unimplemented, ""));

    private static Method<TRequest, TResponse> Method<TRequest, TResponse>(
        MethodType type, MessageParser<TRequest> requestParser, MessageParser<TResponse> responseParser, string name)
        where TRequest : class, IMessage<TRequest>
        where TResponse : class, IMessage<TResponse> =>
        new(
            type,
            ServiceName,
            name,
            Marshallers.Create(message => message.ToByteArray(), requestParser.ParseFrom),
            Marshallers.Create(message => message.ToByteArray(), responseParser.ParseFrom));
}
