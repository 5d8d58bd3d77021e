using Google.Protobuf;
using Grpc.Core;
using Orchestrator.Api.V1;

namespace Orchestrator.Cli.Tests.Fakes;

/// <summary>
/// BackupService bound by hand with the CLI's message types, for the reason given on
/// <see cref="FleetServiceBinding"/>. Only the calls the fake server plays.
/// </summary>
[BindServiceMethod(typeof(BackupServiceBinding), nameof(BindService))]
internal abstract class BackupServiceBinding
{
    private const string ServiceName = "orchestrator.v1.BackupService";

    public static void BindService(ServiceBinderBase binder, BackupServiceBinding? service)
    {
        binder.AddMethod(
            Method(MethodType.Unary, GetBackupRequest.Parser, GetBackupResponse.Parser, "GetBackup"),
            service is null ? null! : service.GetBackup);
        binder.AddMethod(
            Method(MethodType.ServerStreaming, WatchBackupRequest.Parser, WatchBackupResponse.Parser, "WatchBackup"),
            service is null ? null! : service.WatchBackup);
    }

    public virtual Task<GetBackupResponse> GetBackup(GetBackupRequest request, ServerCallContext context) => throw Unimplemented();

    public virtual Task WatchBackup(WatchBackupRequest request, IServerStreamWriter<WatchBackupResponse> responseStream, ServerCallContext context) =>
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
