using Orchestrator.IntegrationTests.Infrastructure;

namespace Orchestrator.IntegrationTests.Silo;

public sealed class ConfigurationErrorTests
{
    [Theory]
    [InlineData("Orchestrator__Host__Name", "", "Orchestrator:Host:Name is required")]
    [InlineData("Orchestrator__Persistence__Mode", "Cluster", "Orchestrator:Persistence:PostgresConnectionString is required")]
    [InlineData("Orchestrator__Persistence__Mode", "Sideways", "Orchestrator:Persistence:Mode")]
    [InlineData("Orchestrator__Endpoints__GrpcPort", "99999", "Orchestrator:Endpoints:GrpcPort")]
    public async Task Silo_BadSetting_ExitsWithCode2AndNamesTheSetting(string key, string value, string expected)
    {
        var dir = Path.Combine(Path.GetTempPath(), $"orchestrator-config-{Guid.NewGuid():N}");
        await using var silo = new SiloProcess("demo-01", dir, new Dictionary<string, string> { [key] = value });
        try
        {
            silo.Start();
            Assert.Equal(2, await silo.WaitForExitAsync(TimeSpan.FromSeconds(60)));
            Assert.Contains(expected, silo.Log, StringComparison.Ordinal);
        }
        finally
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }
}
