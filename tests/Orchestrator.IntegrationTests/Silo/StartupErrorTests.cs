using System.Net;
using System.Net.Sockets;
using Orchestrator.IntegrationTests.Infrastructure;

namespace Orchestrator.IntegrationTests.Silo;

/// <summary>
/// What the machine refuses at start (a port in use, a missing or unreadable file, an address not of this machine)
/// stops a real silo process with exit code 2 and one line on standard error naming the setting: no stack trace.
/// </summary>
public sealed class StartupErrorTests
{
    [Theory]
    [InlineData("Orchestrator__Endpoints__GrpcPort", "Orchestrator:Endpoints:GrpcPort")]
    [InlineData("Orchestrator__Endpoints__HttpPort", "Orchestrator:Endpoints:HttpPort")]
    [InlineData("Orchestrator__Cluster__SiloPort", "Orchestrator:Cluster:SiloPort")]
    public async Task Silo_PortInUse_ExitsWithCode2AndOneLineNamingThePort(string key, string setting)
    {
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        var port = ((IPEndPoint)taken.LocalEndpoint).Port.ToString(System.Globalization.CultureInfo.InvariantCulture);

        var line = await FailedStartAsync(new Dictionary<string, string> { [key] = port });

        Assert.Contains(setting, line, StringComparison.Ordinal);
        Assert.Contains("already in use", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Silo_TokensFileMissing_ExitsWithCode2AndOneLineNamingIt()
    {
        var line = await FailedStartAsync(dir => new Dictionary<string, string> { ["Orchestrator__Security__TokensFile"] = Path.Combine(dir, "no-such-tokens") });

        Assert.Contains("Orchestrator:Security:TokensFile", line, StringComparison.Ordinal);
        Assert.Contains("not found", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Silo_TokensFileIsADirectory_ExitsWithCode2AndOneLineNamingIt()
    {
        var line = await FailedStartAsync(dir => new Dictionary<string, string> { ["Orchestrator__Security__TokensFile"] = Directory.CreateDirectory(Path.Combine(dir, "tokens.d")).FullName });

        Assert.Contains("Orchestrator:Security:TokensFile", line, StringComparison.Ordinal);
        Assert.Contains("is a directory", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Silo_CertificateUnreadable_ExitsWithCode2AndOneLineNamingIt()
    {
        var line = await FailedStartAsync(dir =>
        {
            var certificate = Path.Combine(dir, "server.crt");
            var key = Path.Combine(dir, "server.key");
            File.WriteAllText(certificate, "not a certificate\n");
            File.WriteAllText(key, "not a key\n");
            return new Dictionary<string, string>
            {
                ["Orchestrator__Security__Tls__CertificatePath"] = certificate,
                ["Orchestrator__Security__Tls__KeyPath"] = key,
            };
        });

        Assert.Contains("Orchestrator:Security:Tls:CertificatePath", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Silo_SqliteDirectoryUnusable_ExitsWithCode2AndOneLineNamingIt()
    {
        var line = await FailedStartAsync(dir =>
        {
            // A regular file where the database's directory should be.
            var file = Path.Combine(dir, "not-a-dir");
            File.WriteAllText(file, "");
            return new Dictionary<string, string> { ["Orchestrator__Persistence__SqlitePath"] = Path.Combine(file, "orchestrator.db") };
        });

        Assert.Contains("Orchestrator:Persistence:SqlitePath", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Silo_BindAddressNotOfThisMachine_ExitsWithCode2AndOneLineNamingIt()
    {
        // A documentation address (TEST-NET-3): never assigned here, and only bound to, never sent to.
        var line = await FailedStartAsync(new Dictionary<string, string>
        {
            ["Orchestrator__Endpoints__BindAddress"] = "203.0.113.7",
            ["Orchestrator__Security__AllowInsecureRemote"] = "true",
        });

        Assert.Contains("Orchestrator:Endpoints:BindAddress", line, StringComparison.Ordinal);
        Assert.Contains("not an address of this machine", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Silo_GatewayPortSet_ExitsWithCode2NamingTheRemovedSetting()
    {
        var line = await FailedStartAsync(new Dictionary<string, string> { ["Orchestrator__Cluster__GatewayPort"] = "30000" });

        Assert.Contains("Orchestrator:Cluster:GatewayPort", line, StringComparison.Ordinal);
        Assert.Contains("no Orleans gateway", line, StringComparison.Ordinal);
    }

    private static Task<string> FailedStartAsync(Dictionary<string, string> settings) => FailedStartAsync(_ => settings);

    private static async Task<string> FailedStartAsync(Func<string, Dictionary<string, string>> settings)
    {
        var dir = Path.Combine(Path.GetTempPath(), $"orchestrator-startup-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            await using var silo = new SiloProcess("demo-01", dir, settings(dir));
            silo.Start();
            Assert.Equal(2, await silo.WaitForExitAsync(TimeSpan.FromSeconds(60)));
            var lines = silo.ErrorOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            var line = Assert.Single(lines);
            Assert.StartsWith("orchestrator-silo: ", line, StringComparison.Ordinal);
            Assert.DoesNotContain("   at ", silo.Log, StringComparison.Ordinal);
            Assert.DoesNotContain("Exception", silo.Log, StringComparison.Ordinal);
            return line;
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
