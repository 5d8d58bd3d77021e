using System.Data;
using System.Data.Common;
using Microsoft.Data.Sqlite;

namespace Orchestrator.Silo.Persistence;

/// <summary>
/// SQLite connections that set their PRAGMAs when they open (WAL, busy timeout, synchronous=NORMAL). A PRAGMA
/// cannot live in an Orleans stored query: its result row would be read as the query's result.
/// </summary>
internal sealed class SqliteDataSource(string connectionString) : DbDataSource
{
    private const string Pragmas = "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000; PRAGMA synchronous=NORMAL;";

    public override string ConnectionString { get; } = connectionString;

    protected override DbConnection CreateDbConnection()
    {
        var connection = new SqliteConnection(ConnectionString);
        connection.StateChange += OnStateChange;
        return connection;
    }

    private static void OnStateChange(object sender, StateChangeEventArgs e)
    {
        if (e.CurrentState == ConnectionState.Open && sender is SqliteConnection connection)
        {
            using var command = connection.CreateCommand();
            command.CommandText = Pragmas;
            command.ExecuteNonQuery();
        }
    }
}
