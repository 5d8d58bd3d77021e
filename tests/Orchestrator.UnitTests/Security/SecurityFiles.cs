using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging.Abstractions;
using Orchestrator.Silo.Configuration;
using Orchestrator.Silo.Security;
using Orchestrator.Tests.Shared;

namespace Orchestrator.UnitTests.Security;

/// <summary>A temporary directory with a tokens file and throwaway certificates, deleted on Dispose.</summary>
internal sealed class SecurityFiles : IDisposable
{
    public const string ViewerToken = "viewer-token-0123456789";
    public const string OperatorToken = "operator-token-0123456789";
    public const string AdminToken = "admin-token-0123456789";

    public SecurityFiles()
    {
        Directory = System.IO.Directory.CreateTempSubdirectory("orchestrator-security-").FullName;
        TokensFile = Path.Combine(Directory, "tokens");
        WriteTokens(
            TokenFileTests.HashLine(ViewerToken, "viewer", "dash"),
            TokenFileTests.HashLine(OperatorToken, "operator", "ops-bot"),
            TokenFileTests.HashLine(AdminToken, "admin", "alice"));
        Ca = TestPki.CreateCa("Test CA");
        (CaPath, _) = TestPki.Write(Ca, Directory, "ca");
        (ServerCertificatePath, ServerKeyPath) = TestPki.Write(TestPki.CreateServer(Ca), Directory, "server");
    }

    public string Directory { get; }

    public string TokensFile { get; }

    public X509Certificate2 Ca { get; }

    public string CaPath { get; }

    public string ServerCertificatePath { get; }

    public string ServerKeyPath { get; }

    public void WriteTokens(params string[] lines) => File.WriteAllText(TokensFile, string.Join('\n', lines) + "\n");

    /// <summary>TLS, bearer tokens and client certificates (CN ops-laptop is an operator, CN auditor a viewer).</summary>
    public SecuritySettings Settings(bool tokens = true, bool certificates = true) => new()
    {
        Tls = new TlsSettings { CertificatePath = ServerCertificatePath, KeyPath = ServerKeyPath, ClientCaPath = certificates ? CaPath : null },
        TokensFile = tokens ? TokensFile : null,
        ClientCertificates = certificates ? new() { ["ops-laptop"] = "operator", ["Auditor"] = "viewer" } : [],
    };

    public ApiSecurity Load(SecuritySettings settings)
    {
        var (security, errors) = ApiSecurity.Load(settings, DateTimeOffset.UtcNow);
        Assert.Empty(errors);
        return security!;
    }

    public CallAuthenticator Authenticator(bool tokens = true, bool certificates = true, TimeProvider? time = null)
    {
        var security = Load(Settings(tokens, certificates));
        var store = security is { TokensFile: { } file, Tokens: { } loaded }
            ? new TokenStore(file, loaded, time ?? TimeProvider.System, NullLogger<TokenStore>.Instance)
            : null;
        return new CallAuthenticator(security, store);
    }

    public void Dispose() => System.IO.Directory.Delete(Directory, recursive: true);
}
