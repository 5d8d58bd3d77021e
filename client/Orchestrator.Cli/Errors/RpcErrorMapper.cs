using System.Globalization;
using Google.Rpc;
using Grpc.Core;

namespace Orchestrator.Cli.Errors;

/// <summary>
/// Turns a failed gRPC call into what the user sees and the exit code. Reads the google.rpc.Status the
/// server attaches (grpc-status-details-bin): BadRequest field violations become detail lines, and
/// ErrorInfo reasons can override the status code (HOST_UNAVAILABLE is "unavailable" whatever the code).
/// </summary>
internal static class RpcErrorMapper
{
    /// <summary>ErrorInfo reasons with an exit code of their own.</summary>
    private static readonly Dictionary<string, int> ReasonExitCodes = new(StringComparer.Ordinal)
    {
        ["HOST_UNAVAILABLE"] = ExitCodes.Unavailable,
    };

    public static CliError Map(RpcException exception, Uri endpoint, TimeSpan timeout)
    {
        Google.Rpc.Status? rich = TryGetRichStatus(exception);
        var details = new List<string>();
        ErrorInfo? errorInfo = null;
        if (rich is not null)
        {
            BadRequest? badRequest = rich.GetDetail<BadRequest>();
            if (badRequest is not null)
            {
                foreach (BadRequest.Types.FieldViolation violation in badRequest.FieldViolations)
                {
                    details.Add(string.IsNullOrEmpty(violation.Description)
                        ? $"field {violation.Field}"
                        : $"field {violation.Field}: {violation.Description}");
                }
            }

            errorInfo = rich.GetDetail<ErrorInfo>();
            if (errorInfo is not null && errorInfo.Reason.Length > 0)
            {
                string metadata = string.Join(", ", errorInfo.Metadata
                    .OrderBy(pair => pair.Key, StringComparer.Ordinal)
                    .Select(pair => $"{pair.Key}={pair.Value}"));
                details.Add(metadata.Length == 0 ? $"reason: {errorInfo.Reason}" : $"reason: {errorInfo.Reason} ({metadata})");
            }
        }

        int exitCode = errorInfo is not null && ReasonExitCodes.TryGetValue(errorInfo.Reason, out int byReason)
            ? byReason
            : ExitCodeFor(exception.StatusCode);
        string message = MessageFor(exception, rich, endpoint, timeout);
        return new CliError(exitCode, message, details);
    }

    public static int ExitCodeFor(StatusCode code) => code switch
    {
        StatusCode.OK => ExitCodes.Ok,
        StatusCode.NotFound => ExitCodes.NotFound,
        StatusCode.Unavailable or StatusCode.DeadlineExceeded => ExitCodes.Unavailable,
        StatusCode.InvalidArgument or StatusCode.OutOfRange => ExitCodes.InvalidArgument,
        StatusCode.FailedPrecondition or StatusCode.AlreadyExists or StatusCode.Aborted => ExitCodes.FailedPrecondition,
        _ => ExitCodes.Internal,
    };

    private static string MessageFor(RpcException exception, Google.Rpc.Status? rich, Uri endpoint, TimeSpan timeout)
    {
        string serverMessage = rich is { Message.Length: > 0 } ? rich.Message : exception.Status.Detail;
        switch (exception.StatusCode)
        {
            case StatusCode.DeadlineExceeded:
                return $"no answer from {endpoint.OriginalString} within {timeout.TotalSeconds.ToString("0.###", CultureInfo.InvariantCulture)} s (raise --timeout to wait longer)";
            case StatusCode.Unavailable when rich is null && exception.Status.DebugException is { } transport:
                // The client could not reach the server at all (connection refused, DNS, TLS...).
                return $"cannot reach the orchestrator at {endpoint.OriginalString}: {Innermost(transport).Message}";
            case StatusCode.Unimplemented:
                return $"the server at {endpoint.OriginalString} does not implement this call; is it an older version? ({serverMessage})";
            default:
                break;
        }

        if (string.IsNullOrEmpty(serverMessage))
        {
            serverMessage = exception.StatusCode switch
            {
                StatusCode.NotFound => "not found",
                StatusCode.Unavailable => "unavailable",
                StatusCode.InvalidArgument => "invalid argument",
                StatusCode.FailedPrecondition => "failed precondition",
                _ => "the call failed",
            };
        }

        return ExitCodeFor(exception.StatusCode) == ExitCodes.Internal
            ? $"{serverMessage} (gRPC status {exception.StatusCode})"
            : serverMessage;
    }

    private static Google.Rpc.Status? TryGetRichStatus(RpcException exception)
    {
        try
        {
            return exception.GetRpcStatus();
        }
        catch (Exception)
        {
            // A malformed details trailer must not hide the error itself.
            return null;
        }
    }

    private static Exception Innermost(Exception exception)
    {
        while (exception.InnerException is not null)
        {
            exception = exception.InnerException;
        }

        return exception;
    }
}
