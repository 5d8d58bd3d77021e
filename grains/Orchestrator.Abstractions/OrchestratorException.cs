namespace Orchestrator;

/// <summary>What went wrong, in terms a client can act on. Maps one to one onto gRPC status codes.</summary>
public enum ErrorCode
{
    Internal = 0,
    InvalidArgument = 1,
    NotFound = 2,
    AlreadyExists = 3,
    FailedPrecondition = 4,
    Conflict = 5,
    HostUnavailable = 6,
}

/// <summary>
/// An error with a code, the offending field (for bad input) and a reason. Crosses grain calls intact
/// (serialized by Orleans) so the gRPC layer can turn it into a google.rpc.Status with details.
/// </summary>
[GenerateSerializer]
[Alias("orchestrator.OrchestratorException")]
public sealed class OrchestratorException : Exception
{
    public OrchestratorException(ErrorCode code, string message, string? field = null, string? host = null, string? reason = null)
        : base(message)
    {
        Code = code;
        Field = field;
        Host = host;
        Reason = reason;
    }

    public OrchestratorException()
        : base("orchestrator error")
    {
    }

    public OrchestratorException(string message)
        : base(message)
    {
    }

    public OrchestratorException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    [Id(0)]
    public ErrorCode Code { get; private set; }

    /// <summary>The request field at fault (InvalidArgument), or null.</summary>
    [Id(1)]
    public string? Field { get; private set; }

    /// <summary>The host concerned (HostUnavailable), or null.</summary>
    [Id(2)]
    public string? Host { get; private set; }

    /// <summary>A machine-readable reason (ErrorInfo.reason), e.g. RAW_DISK or BACKUP_OVERLAY_ACTIVE; null uses the code's.</summary>
    [Id(3)]
    public string? Reason { get; private set; }

    /// <summary>Longest prefix of a caller's value that an error message quotes (<see cref="Quote"/>).</summary>
    public const int QuotedPrefix = 64;

    /// <summary>
    /// A caller's value as error messages show it: in single quotes, control characters escaped (\uXXXX), at most
    /// <see cref="QuotedPrefix"/> characters followed by "…(N bytes)" when longer. Every message that names what a
    /// caller sent goes through here, so an error (and the log line made from it) never carries a caller's whole input.
    /// </summary>
    public static string Quote(string? value)
    {
        if (value is null)
        {
            return "(null)";
        }

        var prefix = value.Length > QuotedPrefix ? value[..QuotedPrefix] : value;
        var text = new System.Text.StringBuilder(prefix.Length + 24).Append('\'');
        foreach (var c in prefix)
        {
            if (char.IsControl(c) || char.IsSurrogate(c) || c is '\u2028' or '\u2029')
            {
                text.Append(System.FormattableString.Invariant($"\\u{(int)c:x4}"));
            }
            else
            {
                text.Append(c);
            }
        }

        text.Append('\'');
        if (value.Length > QuotedPrefix)
        {
            text.Append(System.FormattableString.Invariant($"…({System.Text.Encoding.UTF8.GetByteCount(value)} bytes)"));
        }

        return text.ToString();
    }

    public static OrchestratorException InvalidArgument(string field, string reason) =>
        new(ErrorCode.InvalidArgument, $"{field}: {reason}", field);

    public static OrchestratorException NotFound(string what) => new(ErrorCode.NotFound, what);

    public static OrchestratorException FailedPrecondition(string reason, string message) =>
        new(ErrorCode.FailedPrecondition, message, reason: reason);

    public static OrchestratorException HostUnavailable(string host) =>
        new(ErrorCode.HostUnavailable, $"host unavailable: no live silo serves host '{host}'", host: host);
}
