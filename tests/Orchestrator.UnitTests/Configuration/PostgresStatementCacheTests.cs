using Npgsql;
using Orchestrator.Silo.Persistence;

namespace Orchestrator.UnitTests.Configuration;

/// <summary>Cluster mode prepares its grain-storage statements on the server unless the connection string says otherwise.</summary>
public sealed class PostgresStatementCacheTests
{
    private const string Given = "Host=db;Port=5432;Username=orchestrator;Password=secret;Database=orchestrator;Maximum Pool Size=30";

    [Fact]
    public void WithStatementCache_NotSet_TurnsAutoPrepareOnAndKeepsEverythingElse()
    {
        var result = new NpgsqlConnectionStringBuilder(PersistenceExtensions.WithStatementCache(Given));

        Assert.Equal(PersistenceExtensions.DefaultMaxAutoPrepare, result.MaxAutoPrepare);
        Assert.Equal(("db", 5432, "orchestrator", "secret", "orchestrator", 30), (result.Host, result.Port, result.Username, result.Password, result.Database, result.MaxPoolSize));
    }

    [Theory]
    [InlineData("Max Auto Prepare=0", 0)]
    [InlineData("max auto prepare=5", 5)]
    [InlineData("MaxAutoPrepare=7", 7)]
    public void WithStatementCache_SetByTheOperator_LeftAsGiven(string setting, int expected)
    {
        var given = $"{Given};{setting}";

        var result = PersistenceExtensions.WithStatementCache(given);

        Assert.Equal(given, result);
        Assert.Equal(expected, new NpgsqlConnectionStringBuilder(result).MaxAutoPrepare);
    }
}
