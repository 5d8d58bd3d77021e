namespace Orchestrator.Silo.Security;

/// <summary>What a caller may do; each role includes every lower one.</summary>
public enum Role
{
    /// <summary>Every read: Get*, List*, Watch*, compliance, overlays, server reflection.</summary>
    Viewer = 1,

    /// <summary>Viewer, and starting work that adds something: a backup, a checkpoint, a policy run now.</summary>
    Operator = 2,

    /// <summary>Operator, and changes and deletions: policies, schedules, reverts, checkpoint deletes, restores.</summary>
    Admin = 3,
}

public static class Roles
{
    public static string Name(this Role role) => role switch
    {
        Role.Viewer => "viewer",
        Role.Operator => "operator",
        Role.Admin => "admin",
        _ => role.ToString(),
    };

    /// <summary>The names a setting or a tokens file may use, for error messages.</summary>
    public const string Names = "viewer, operator, admin";

    /// <summary>viewer, operator or admin (any case).</summary>
    public static bool TryParse(string? text, out Role role)
    {
        role = text?.ToLowerInvariant() switch
        {
            "viewer" => Role.Viewer,
            "operator" => Role.Operator,
            "admin" => Role.Admin,
            _ => 0,
        };
        return role != 0;
    }
}
