using Google.Protobuf.WellKnownTypes;
using Google.Rpc;
using Grpc.Core;
using Orchestrator.Hypervisor;

namespace Orchestrator.Silo.Services;

/// <summary>Turns orchestrator errors into gRPC statuses with google.rpc details (BadRequest, ErrorInfo).</summary>
internal static class ErrorMapping
{
    public const string Domain = "orchestrator.dev";

    /// <summary>Longest message a reply carries (characters); the sources quote at most a short prefix of a caller's value already.</summary>
    public const int MaxMessage = 400;

    /// <summary>Longest field path or metadata value a reply carries.</summary>
    public const int MaxField = 128;

    /// <summary>
    /// The last line of defence against echoing a caller's input: at most <paramref name="max"/> characters, control
    /// characters escaped. A reply's texts travel in HTTP/2 trailers; a long one makes the reply unreadable for the
    /// client (and its channel hang), so no text leaves the server uncapped.
    /// </summary>
    public static string Cap(string? text, int max = MaxMessage)
    {
        if (string.IsNullOrEmpty(text))
        {
            return "";
        }

        var builder = new System.Text.StringBuilder(Math.Min(text.Length, max) + 16);
        foreach (var c in text)
        {
            if (builder.Length >= max)
            {
                return builder.Append(System.Globalization.CultureInfo.InvariantCulture, $"…({text.Length} characters)").ToString();
            }

            if (char.IsControl(c) && c != '\n')
            {
                builder.Append(System.Globalization.CultureInfo.InvariantCulture, $"\\u{(int)c:x4}");
            }
            else
            {
                builder.Append(c);
            }
        }

        return builder.ToString();
    }

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
        var message = Cap(e.Message);
        var status = new Google.Rpc.Status { Code = (int)code, Message = message };
        if (e.Field is not null)
        {
            status.Details.Add(Any.Pack(new BadRequest
            {
                FieldViolations = { new BadRequest.Types.FieldViolation { Field = Cap(e.Field, MaxField), Description = message } },
            }));
        }

        var info = new ErrorInfo { Reason = Cap(e.Reason ?? reason, MaxField), Domain = Domain };
        if (e.Host is not null)
        {
            info.Metadata["host"] = Cap(e.Host, MaxField);
        }

        status.Details.Add(Any.Pack(info));
        return status.ToRpcException();
    }

    public static RpcException ToRpcException(HypervisorException e)
    {
        var status = new Google.Rpc.Status { Code = (int)Code.Internal, Message = Cap(e.Message) };
        var info = new ErrorInfo { Reason = "HYPERVISOR_" + e.Kind.ToString().ToUpperInvariant(), Domain = Domain };
        if (e.LibvirtCode is { } libvirtCode)
        {
            info.Metadata["libvirt_code"] = libvirtCode.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }

        status.Details.Add(Any.Pack(info));
        return status.ToRpcException();
    }
}
