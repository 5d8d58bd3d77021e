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
    public OrchestratorException(ErrorCode code, string message, string? field = null, string? host = null)
        : base(message)
    {
        Code = code;
        Field = field;
        Host = host;
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

    public static OrchestratorException InvalidArgument(string field, string reason) =>
        new(ErrorCode.InvalidArgument, $"{field}: {reason}", field);

    public static OrchestratorException NotFound(string what) => new(ErrorCode.NotFound, what);

    public static OrchestratorException HostUnavailable(string host) =>
        new(ErrorCode.HostUnavailable, $"host unavailable: no live silo serves host '{host}'", host: host);
}
