namespace Orchestrator.IntegrationTests.Infrastructure;

/// <summary>A private PostgreSQL server (tests/infra/postgres.sh) on a free port, deleted at the end.</summary>
public sealed class PostgresFixture : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"orchestrator-pg-{Guid.NewGuid():N}");

    public string ConnectionString { get; private set; } = "";

    public async Task InitializeAsync()
    {
        var install = await ProcessRunner.RunScriptAsync("tests/infra/postgres.sh", "install");
        Assert.True(install.ExitCode == 0, "PostgreSQL install failed: " + ProcessRunner.Describe(install));
        var start = await ProcessRunner.RunScriptAsync("tests/infra/postgres.sh", "start", _dir, Repo.FreePort().ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.True(start.ExitCode == 0, "PostgreSQL start failed: " + ProcessRunner.Describe(start));
        ConnectionString = start.StandardOutput.Trim();
    }

    public async Task DisposeAsync() => await ProcessRunner.RunScriptAsync("tests/infra/postgres.sh", "stop", _dir);
}

[CollectionDefinition(Name)]
public sealed class PostgresCollection : ICollectionFixture<PostgresFixture>
{
    public const string Name = "postgres";
}
