using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Grpc.Core;
using Grpc.Net.Client;
using Orchestrator.Api.V1;
using Orchestrator.IntegrationTests.Infrastructure;
using Orchestrator.Tests.Shared;

namespace Orchestrator.IntegrationTests.Security;

/// <summary>
/// One embedded silo process (SQLite, simulated demo host) serving gRPC over TLS with mutual TLS and a tokens
/// file, and the throwaway certificates and tokens made for it in a temporary directory. Both are removed
/// at the end.
/// </summary>
public sealed class SecuredSiloFixture : IAsyncLifetime
{
    public SecuredSiloFixture()
    {
        Directory = System.IO.Directory.CreateTempSubdirectory("orchestrator-secured-").FullName;
        var pki = Path.Combine(Directory, "pki");
        Ca = TestPki.CreateCa("Orchestrator Test CA");
        CaPath = TestPki.Write(Ca, pki, "ca").Certificate;
        var (serverCertificate, serverKey) = TestPki.Write(TestPki.CreateServer(Ca), pki, "server");
        (ClientCertificatePath, ClientKeyPath) = TestPki.Write(TestPki.CreateClient(Ca, "ops-laptop"), pki, "ops-laptop");
        var rogueCa = TestPki.CreateCa("Rogue CA");
        RogueCaPath = TestPki.Write(rogueCa, pki, "rogue-ca").Certificate;
        (RogueClientCertificatePath, RogueClientKeyPath) = TestPki.Write(TestPki.CreateClient(rogueCa, "ops-laptop"), pki, "rogue-client");

        ViewerToken = NewToken();
        OperatorToken = NewToken();
        AdminToken = NewToken();
        TokensFile = Path.Combine(Directory, "tokens");
        File.WriteAllText(TokensFile, string.Join('\n',
            "# made by the test; only hashes",
            HashLine(ViewerToken, "viewer", "grafana"),
            HashLine(OperatorToken, "operator", "ops-bot"),
            HashLine(AdminToken, "admin", "alice"),
            ""));
        ViewerTokenFile = Path.Combine(Directory, "viewer.token");
        File.WriteAllText(ViewerTokenFile, ViewerToken + "\n");

        var backups = Path.Combine(Directory, "backups");
        System.IO.Directory.CreateDirectory(backups);
        Silo = new SiloProcess("demo-01", Path.Combine(Directory, "silo"), new Dictionary<string, string>
        {
            ["Orchestrator__Security__Tls__CertificatePath"] = serverCertificate,
            ["Orchestrator__Security__Tls__KeyPath"] = serverKey,
            ["Orchestrator__Security__Tls__ClientCaPath"] = CaPath,
            ["Orchestrator__Security__ClientCertificates__ops-laptop"] = "operator",
            ["Orchestrator__Security__TokensFile"] = TokensFile,
            ["Orchestrator__Backup__Roots__0"] = backups,
            ["Orchestrator__Backup__DefaultTarget"] = backups,
            // The audit trail and refusals.
            ["Logging__LogLevel__Orchestrator.Silo.Security"] = "Information",
        });
    }

    public string Directory { get; }

    public X509Certificate2 Ca { get; }

    public string CaPath { get; }

    public string RogueCaPath { get; }

    public string ClientCertificatePath { get; }

    public string ClientKeyPath { get; }

    public string RogueClientCertificatePath { get; }

    public string RogueClientKeyPath { get; }

    public string ViewerToken { get; }

    public string OperatorToken { get; }

    public string AdminToken { get; }

    public string TokensFile { get; }

    public string ViewerTokenFile { get; }

    public SiloProcess Silo { get; }

    public string HttpsEndpoint => $"https://127.0.0.1:{Silo.GrpcPort}";

    public static string HashLine(string token, string role, string name) =>
        $"sha256:{Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(token)))} {role} {name}";

    public async Task InitializeAsync()
    {
        Silo.Start();
        await Silo.WaitReadyAsync();
        await WaitForInventoryAsync();
    }

    public async Task DisposeAsync()
    {
        await Silo.DisposeAsync();
        System.IO.Directory.Delete(Directory, recursive: true);
    }

    /// <summary>Runs the real CLI against the TLS endpoint with the given arguments and environment variables only.</summary>
    public Task<ProcessResult> CliAsync(IDictionary<string, string?>? environment, params string[] args)
    {
        var variables = new Dictionary<string, string?>
        {
            // Nothing from the test runner's own environment may stand in for a credential.
            ["ORCHESTRATOR_ENDPOINT"] = HttpsEndpoint,
            ["ORCHESTRATOR_TOKEN"] = null,
            ["ORCHESTRATOR_TOKEN_FILE"] = null,
            ["ORCHESTRATOR_CA_CERT"] = null,
            ["ORCHESTRATOR_CLIENT_CERT"] = null,
            ["ORCHESTRATOR_CLIENT_KEY"] = null,
        };
        foreach (var (key, value) in environment ?? new Dictionary<string, string?>())
        {
            variables[key] = value;
        }

        return ProcessRunner.RunAsync("dotnet", [Repo.CliDll, .. args], variables, TimeSpan.FromSeconds(60));
    }

    /// <summary>The first inventory sync has run: asked over TLS with the viewer's token.</summary>
    private async Task WaitForInventoryAsync()
    {
        var handler = new SocketsHttpHandler();
        handler.SslOptions.CertificateChainPolicy = new X509ChainPolicy { TrustMode = X509ChainTrustMode.CustomRootTrust, RevocationMode = X509RevocationMode.NoCheck };
        handler.SslOptions.CertificateChainPolicy.CustomTrustStore.Add(Ca);
        using var channel = GrpcChannel.ForAddress(HttpsEndpoint, new GrpcChannelOptions { HttpHandler = handler, DisposeHttpClient = true });
        var fleet = new FleetService.FleetServiceClient(channel);
        var headers = new Metadata { { "authorization", "Bearer " + ViewerToken } };
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            try
            {
                await fleet.GetVmAsync(new GetVmRequest { Key = "demo-01/web-1" }, headers);
                return;
            }
            catch (RpcException e) when (e.StatusCode is StatusCode.NotFound or StatusCode.Unavailable && DateTime.UtcNow < deadline)
            {
                await Task.Delay(200);
            }
        }
    }

    private static string NewToken() => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));
}
