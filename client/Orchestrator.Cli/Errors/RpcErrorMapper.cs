using System.Globalization;
using System.Net.Sockets;
using System.Security.Authentication;
using Google.Rpc;
using Grpc.Core;
using Orchestrator.Cli.Infrastructure;

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

    public static CliError Map(RpcException exception, Uri endpoint, TimeSpan timeout) =>
        Map(exception, new GrpcConnection(endpoint), timeout);

    public static CliError Map(RpcException exception, GrpcConnection connection, TimeSpan timeout)
    {
        Uri endpoint = connection.Endpoint;
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

        Exception? transport = TransportFailure(exception, rich);
        int exitCode = transport is not null ? ExitCodes.Unavailable
            : errorInfo is not null && ReasonExitCodes.TryGetValue(errorInfo.Reason, out int byReason) ? byReason
            : ExitCodeFor(exception.StatusCode);
        string message = transport is not null
            // The client could not reach the server at all (connection refused, DNS, TLS...).
            ? $"cannot reach the orchestrator at {endpoint.OriginalString}: {OneLine(Innermost(transport).Message)}"
            : MessageFor(exception, rich, endpoint, timeout);
        if (Hint(exception.StatusCode, transport, connection) is { } hint)
        {
            details.Add(hint);
        }

        return new CliError(exitCode, message, details);
    }

    public static int ExitCodeFor(StatusCode code) => code switch
    {
        StatusCode.OK => ExitCodes.Ok,
        StatusCode.NotFound => ExitCodes.NotFound,
        StatusCode.Unavailable or StatusCode.DeadlineExceeded => ExitCodes.Unavailable,
        StatusCode.InvalidArgument or StatusCode.OutOfRange => ExitCodes.InvalidArgument,
        StatusCode.FailedPrecondition or StatusCode.AlreadyExists or StatusCode.Aborted => ExitCodes.FailedPrecondition,
        StatusCode.Unauthenticated => ExitCodes.Unauthenticated,
        StatusCode.PermissionDenied => ExitCodes.PermissionDenied,
        _ => ExitCodes.Internal,
    };

    private static string MessageFor(RpcException exception, Google.Rpc.Status? rich, Uri endpoint, TimeSpan timeout)
    {
        string serverMessage = rich is { Message.Length: > 0 } ? rich.Message : exception.Status.Detail;
        switch (exception.StatusCode)
        {
            case StatusCode.DeadlineExceeded:
                return $"no answer from {endpoint.OriginalString} within {timeout.TotalSeconds.ToString("0.###", CultureInfo.InvariantCulture)} s (raise --timeout to wait longer)";
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
                StatusCode.Unauthenticated => "not authenticated",
                StatusCode.PermissionDenied => "permission denied",
                _ => "the call failed",
            };
        }

        return ExitCodeFor(exception.StatusCode) == ExitCodes.Internal
            ? $"{serverMessage} (gRPC status {exception.StatusCode})"
            : serverMessage;
    }

    /// <summary>
    /// The transport error when the call never reached the server's code: no rich status, and Unavailable, or Internal
    /// caused by the connection itself (gRPC reports a failed TLS handshake as "Error starting gRPC call").
    /// </summary>
    private static Exception? TransportFailure(RpcException exception, Google.Rpc.Status? rich)
    {
        if (rich is not null || exception.Status.DebugException is not { } debug)
        {
            return null;
        }

        return exception.StatusCode == StatusCode.Unavailable
            || (exception.StatusCode == StatusCode.Internal && Chain(debug).Any(e => e is HttpRequestException or AuthenticationException or IOException))
            ? debug
            : null;
    }

    /// <summary>A line saying what to do about an authentication or TLS failure, or null.</summary>
    private static string? Hint(StatusCode code, Exception? transport, GrpcConnection connection)
    {
        if (code == StatusCode.Unauthenticated)
        {
            return $"hint: send a bearer token the server knows ({GlobalOptions.TokenFileOptionName} FILE, ${GlobalOptions.TokenVariable} or ${GlobalOptions.TokenFileVariable}) "
                + $"or, over https://, a client certificate it maps to a role ({GlobalOptions.ClientCertOptionName} FILE)";
        }

        if (transport is null)
        {
            return null;
        }

        List<Exception> chain = Chain(transport).ToList();
        if (chain.OfType<AuthenticationException>().FirstOrDefault() is { } tls)
        {
            if (tls.Message.Contains("RemoteCertificateNameMismatch", StringComparison.Ordinal))
            {
                return $"hint: the server's certificate is not issued for '{connection.Endpoint.Host}': connect with a name or address the certificate lists";
            }

            if (tls.Message.Contains("certificate", StringComparison.OrdinalIgnoreCase))
            {
                return connection.TrustedCa is null
                    ? $"hint: the server's certificate is not signed by a CA this system trusts: pass {GlobalOptions.CaCertOptionName} FILE (or ${GlobalOptions.CaCertVariable}) with the CA that signed it"
                    : $"hint: the server's certificate is not signed by the CA given with {GlobalOptions.CaCertOptionName} (or ${GlobalOptions.CaCertVariable}); pass the CA that signed it";
            }

            return "hint: the server does not speak TLS on this port; if it serves plain HTTP/2 (h2c), use an http:// endpoint";
        }

        if (chain.OfType<SocketException>().Any())
        {
            return null; // refused, unreachable, unknown host: the message says it
        }

        if (!connection.Tls)
        {
            return "hint: the server closed the connection; if it serves TLS on this port, use an https:// endpoint";
        }

        return connection.ClientCertificate is not null
            ? "hint: the server may have refused the client certificate: it must be signed by the CA the server trusts for clients (Orchestrator:Security:Tls:ClientCaPath)"
            : null;
    }

    private static IEnumerable<Exception> Chain(Exception exception)
    {
        for (Exception? e = exception; e is not null; e = e.InnerException)
        {
            yield return e;
        }
    }

    private static string OneLine(string message) =>
        string.Join(' ', message.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));

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
