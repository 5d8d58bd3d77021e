namespace Orchestrator.Grains.Backups;

/// <summary>Resolves a requested target directory and confines it to the configured roots.</summary>
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
        foreach (var root in options.Roots)
        {
            var fullRoot = Path.TrimEndingDirectorySeparator(Path.GetFullPath(root));
            if (full == fullRoot || full.StartsWith(fullRoot + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            {
                return full;
            }
        }

        throw OrchestratorException.InvalidArgument(
            field,
            options.Roots.Count == 0
                ? "no backup roots are configured (Orchestrator:Backup:Roots); backups are disabled on this host"
                : $"'{target}' is outside the configured backup roots ({string.Join(", ", options.Roots)})");
    }
}
