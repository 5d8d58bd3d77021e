using System.Data.Common;
using System.Reflection;

namespace Orchestrator.Silo.Persistence;

/// <summary>
/// Applies our SQL schema (deploy/sql/{dialect}/*.sql, embedded in this assembly) in file-name order. Every
/// script is idempotent, so this runs at every start.
/// </summary>
internal static class SchemaInstaller
{
    public static IReadOnlyList<(string Name, string Sql)> Scripts(string dialect)
    {
        var assembly = typeof(SchemaInstaller).Assembly;
        var prefix = $"sql/{dialect}/";
        return [.. assembly.GetManifestResourceNames()
            .Where(n => n.StartsWith(prefix, StringComparison.Ordinal) && n.EndsWith(".sql", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal)
            .Select(n => (n, Read(assembly, n)))];
    }

    public static async Task ApplyAsync(DbDataSource dataSource, string dialect, CancellationToken cancellationToken = default)
    {
        var scripts = Scripts(dialect);
        if (scripts.Count == 0)
        {
            throw new InvalidOperationException($"no embedded SQL scripts for '{dialect}'");
        }

        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        foreach (var (name, sql) in scripts)
        {
            await using var command = connection.CreateCommand();
            command.CommandText = sql;
            try
            {
                await command.ExecuteNonQueryAsync(cancellationToken);
            }
            catch (DbException e)
            {
                throw new InvalidOperationException($"applying {name} failed: {e.Message}", e);
            }
        }
    }

    private static string Read(Assembly assembly, string name)
    {
        using var stream = assembly.GetManifestResourceStream(name)!;
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
