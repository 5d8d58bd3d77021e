namespace Orchestrator.Cli;

/// <summary>
/// The process exit codes of the <c>orchestrator</c> command. Scripts depend on them: never renumber,
/// only add. Documented in README.md and in the epilog of <c>--help</c>.
/// </summary>
internal static class ExitCodes
{
    public const int Ok = 0;
    public const int Internal = 1;
    public const int Usage = 2;
    public const int NotFound = 3;
    public const int Unavailable = 4;
    public const int InvalidArgument = 5;
    public const int FailedPrecondition = 6;

    /// <summary>
    /// A run the command followed did not succeed: a backup run (<c>backup start --wait</c>, <c>backup watch</c>) ended
    /// Failed, or a policy run (<c>policy run --watch</c>, <c>policy watch</c>) ended Partial or Failed.
    /// </summary>
    public const int RunFailed = 7;

    /// <summary>The server did not recognise the caller: no token or client certificate, or an unknown one.</summary>
    public const int Unauthenticated = 8;

    /// <summary>The caller is known but its role may not make this call.</summary>
    public const int PermissionDenied = 9;
    public const int Interrupted = 130;

    public static IReadOnlyList<(int Code, string Meaning)> All { get; } =
    [
        (Ok, "success"),
        (Internal, "internal or unknown error"),
        (Usage, "usage error: bad command, argument or option (nothing was sent)"),
        (NotFound, "not found"),
        (Unavailable, "unavailable: endpoint unreachable, no answer within --timeout, or the host's silo is down"),
        (InvalidArgument, "invalid argument: the server rejected a value"),
        (FailedPrecondition, "failed precondition or conflict; fleet compliance --fail-on-violation: a VM is out of its RPO or never backed up"),
        (RunFailed, "the backup run ended failed (backup start --wait, backup watch), or the policy run ended partial or failed (policy run --watch, policy watch)"),
        (Unauthenticated, "not authenticated: no token or client certificate, or one the server does not know"),
        (PermissionDenied, "permission denied: the caller's role may not make this call (the message names the role needed)"),
        (Interrupted, "interrupted (Ctrl+C)"),
    ];
}
