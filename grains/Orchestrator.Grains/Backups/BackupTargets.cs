using Orchestrator.Hypervisor;

namespace Orchestrator.Grains.Backups;

/// <summary>
/// Resolves a requested target directory and confines it to the configured roots: lexically (no <c>..</c> escape) and
/// really (symbolic links resolved in the target and in the roots). The result is the real path.
/// </summary>
public static class BackupTargets
{
    public static string Resolve(string? requested, BackupOptions options, string field = "target")
    {
        var target = string.IsNullOrWhiteSpace(requested) ? options.DefaultTarget : requested;
        if (string.IsNullOrWhiteSpace(target))
        {
            throw OrchestratorException.InvalidArgument(field, "no target given and no default target configured (Orchestrator:Backup:DefaultTarget)");
        }

        if (!Path.IsPathFullyQualified(target))
        {
            throw OrchestratorException.InvalidArgument(field, $"'{target}' is not an absolute path");
        }

        if (target.Contains('\0', StringComparison.Ordinal))
        {
            throw OrchestratorException.InvalidArgument(field, "the path contains a NUL character");
        }

        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(target));
        if (options.Roots.Any(root => SafeFiles.IsUnder(full, Path.GetFullPath(root))))
        {
            // Lexically inside; now where it really is: a symbolic link on the way must not lead out of the roots.
            var real = SafeFiles.ResolveExistingPrefix(full);
            if (RealRootOf(real, options) is null)
            {
                throw OrchestratorException.InvalidArgument(field, $"'{target}' resolves through a symbolic link to '{real}', outside the configured backup roots ({string.Join(", ", options.Roots)})");
            }

            return real;
        }

        throw OrchestratorException.InvalidArgument(
            field,
            options.Roots.Count == 0
                ? "no backup roots are configured (Orchestrator:Backup:Roots); backups are disabled on this host"
                : $"'{target}' is outside the configured backup roots ({string.Join(", ", options.Roots)})");
    }

    /// <summary>The configured root (its real path) that the real path <paramref name="realTarget"/> lies under, if any.</summary>
    public static string? RealRootOf(string realTarget, BackupOptions options) =>
        options.Roots
            .Select(SafeFiles.ResolveExistingPrefix)
            .Where(root => SafeFiles.IsUnder(realTarget, root))
            .OrderByDescending(root => root.Length)
            .FirstOrDefault();
}
