using Google.Protobuf.WellKnownTypes;
using Google.Rpc;
using Grpc.Core;
using Orchestrator.Hypervisor;

namespace Orchestrator.Silo.Services;

/// <summary>Turns orchestrator errors into gRPC statuses with google.rpc details (BadRequest, ErrorInfo).</summary>
internal static class ErrorMapping
{
    public const string Domain = "orchestrator.dev";

    public static RpcException ToRpcException(OrchestratorException e)
    {
        var (code, reason) = e.Code switch
        {
            ErrorCode.InvalidArgument => (Code.InvalidArgument, "INVALID_ARGUMENT"),
            ErrorCode.NotFound => (Code.NotFound, "NOT_FOUND"),
            ErrorCode.AlreadyExists => (Code.AlreadyExists, "ALREADY_EXISTS"),
            ErrorCode.FailedPrecondition => (Code.FailedPrecondition, "FAILED_PRECONDITION"),
            ErrorCode.Conflict => (Code.Aborted, "CONFLICT"),
            ErrorCode.HostUnavailable => (Code.Unavailable, "HOST_UNAVAILABLE"),
            _ => (Code.Internal, "INTERNAL"),
        };
        var status = new Google.Rpc.Status { Code = (int)code, Message = e.Message };
        if (e.Field is not null)
        {
            status.Details.Add(Any.Pack(new BadRequest
            {
                FieldViolations = { new BadRequest.Types.FieldViolation { Field = e.Field, Description = e.Message } },
            }));
        }

        var info = new ErrorInfo { Reason = reason, Domain = Domain };
        if (e.Host is not null)
        {
            info.Metadata["host"] = e.Host;
        }

        status.Details.Add(Any.Pack(info));
        return status.ToRpcException();
    }

    public static RpcException ToRpcException(HypervisorException e)
    {
        var status = new Google.Rpc.Status { Code = (int)Code.Internal, Message = e.Message };
        var info = new ErrorInfo { Reason = "HYPERVISOR_" + e.Kind.ToString().ToUpperInvariant(), Domain = Domain };
        if (e.LibvirtCode is { } libvirtCode)
        {
            info.Metadata["libvirt_code"] = libvirtCode.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }

        status.Details.Add(Any.Pack(info));
        return status.ToRpcException();
    }
}
