using Google.Protobuf;
using Grpc.Core;
using Orchestrator.Api.V1;

namespace Orchestrator.Cli.Tests.Fakes;

/// <summary>
/// What Grpc.Tools generates as FleetService.FleetServiceBase with GrpcServices="Server". The CLI compiles
/// the proto as a client only, and compiling it again here would define the message types twice, so this
/// binds the methods by hand with the CLI's message types. ASP.NET Core gRPC finds each handler by the RPC
/// name as a virtual method declared here (hence no Async suffix), overridden by the service.
/// </summary>
[BindServiceMethod(typeof(FleetServiceBinding), nameof(BindService))]
internal abstract class FleetServiceBinding
{
    private const string ServiceName = "orchestrator.v1.FleetService";

    public static void BindService(ServiceBinderBase binder, FleetServiceBinding? service)
    {
        binder.AddMethod(Unary(ListHostsRequest.Parser, ListHostsResponse.Parser, "ListHosts"), service is null ? null! : service.ListHosts);
        binder.AddMethod(Unary(ListVmsRequest.Parser, ListVmsResponse.Parser, "ListVms"), service is null ? null! : service.ListVms);
        binder.AddMethod(Unary(GetVmRequest.Parser, GetVmResponse.Parser, "GetVm"), service is null ? null! : service.GetVm);
        binder.AddMethod(Unary(GetDiskChainRequest.Parser, GetDiskChainResponse.Parser, "GetDiskChain"), service is null ? null! : service.GetDiskChain);
    }

    public virtual Task<ListHostsResponse> ListHosts(ListHostsRequest request, ServerCallContext context) => throw Unimplemented();

    public virtual Task<ListVmsResponse> ListVms(ListVmsRequest request, ServerCallContext context) => throw Unimplemented();

    public virtual Task<GetVmResponse> GetVm(GetVmRequest request, ServerCallContext context) => throw Unimplemented();

    public virtual Task<GetDiskChainResponse> GetDiskChain(GetDiskChainRequest request, ServerCallContext context) => throw Unimplemented();

    private static RpcException Unimplemented() => new(new Status(StatusCode.Unimplemented, ""));

    private static Method<TRequest, TResponse> Unary<TRequest, TResponse>(
        MessageParser<TRequest> requestParser, MessageParser<TResponse> responseParser, string name)
        where TRequest : class, IMessage<TRequest>
        where TResponse : class, IMessage<TResponse> =>
        new(
            MethodType.Unary,
            ServiceName,
            name,
            Marshallers.Create(message => message.ToByteArray(), requestParser.ParseFrom),
            Marshallers.Create(message => message.ToByteArray(), responseParser.ParseFrom));
}
