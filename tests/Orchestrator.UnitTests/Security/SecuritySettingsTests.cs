using Orchestrator.Silo.Configuration;
using Orchestrator.Silo.Security;
using Orchestrator.Tests.Shared;

namespace Orchestrator.UnitTests.Security;

public sealed class SecuritySettingsTests : IDisposable
{
    private readonly SecurityFiles _files = new();

    public void Dispose() => _files.Dispose();

    private static OrchestratorSettings Settings(string bindAddress = "127.0.0.1", SecuritySettings? security = null) => new()
    {
        Host = new HostSettings { Name = "kvm-01", Uri = "qemu:///system" },
        Endpoints = new EndpointSettings { BindAddress = bindAddress },
        Security = security ?? new SecuritySettings(),
    };

    [Theory]
    [InlineData("0.0.0.0")]
    [InlineData("10.0.0.12")]
    [InlineData("::")]
    public void Validate_NonLoopbackWithoutTlsAndAuthentication_RefusedNamingTheKeys(string address)
    {
        var error = Assert.Single(OrchestratorSettingsValidator.Validate(Settings(address)));

        Assert.StartsWith($"Orchestrator:Endpoints:BindAddress is {address}, not a loopback address, but the gRPC port has neither TLS nor authentication", error, StringComparison.Ordinal);
        Assert.Contains("Orchestrator:Security:AllowInsecureRemote=true", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_NonLoopbackWithTokensButNoTls_Refused()
    {
        var error = Assert.Single(OrchestratorSettingsValidator.Validate(Settings("0.0.0.0", new SecuritySettings { TokensFile = _files.TokensFile })));

        Assert.Contains("has no TLS (tokens would cross the network in clear text)", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_NonLoopbackWithTlsButNoAuthentication_Refused()
    {
        var error = Assert.Single(OrchestratorSettingsValidator.Validate(Settings("0.0.0.0", _files.Settings(tokens: false, certificates: false))));

        Assert.Contains("has no authentication", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("127.0.0.1", false, false, false)] // today's default: open on loopback
    [InlineData("::1", false, false, false)]
    [InlineData("127.0.0.1", false, true, false)] // tokens without TLS on loopback
    [InlineData("0.0.0.0", true, true, false)]
    [InlineData("0.0.0.0", false, false, true)] // explicitly insecure
    public void Validate_Accepted(string address, bool tls, bool tokens, bool allowInsecure)
    {
        var security = tls ? _files.Settings(tokens, certificates: false) : new SecuritySettings { TokensFile = tokens ? _files.TokensFile : null };
        security.AllowInsecureRemote = allowInsecure;

        Assert.Empty(OrchestratorSettingsValidator.Validate(Settings(address, security)));
    }

    [Fact]
    public void Validate_MutualTlsAlone_IsAuthentication()
    {
        Assert.Empty(OrchestratorSettingsValidator.Validate(Settings("0.0.0.0", _files.Settings(tokens: false))));
    }

    [Fact]
    public void Validate_ShapeProblems_EachNamed()
    {
        var security = new SecuritySettings
        {
            Tls = new TlsSettings { CertificatePath = "/x/server.crt", ClientCaPath = "/x/ca.crt" },
            ClientCertificates = new() { ["ops-laptop"] = "superuser" },
        };

        var errors = OrchestratorSettingsValidator.Validate(Settings(security: security));

        Assert.Equal(
            [
                "Orchestrator:Security:Tls:KeyPath is required with Orchestrator:Security:Tls:CertificatePath (the certificate's private key, PEM)",
                "Orchestrator:Security:Tls:ClientCaPath needs TLS: set Orchestrator:Security:Tls:CertificatePath and Orchestrator:Security:Tls:KeyPath too (client certificates are only sent over TLS)",
                "Orchestrator:Security:ClientCertificates:ops-laptop: unknown role 'superuser' (expected viewer, operator, admin)",
            ],
            errors);
    }

    [Fact]
    public void Validate_ClientCaWithoutMappingsAndMappingsWithoutCa_Refused()
    {
        var noMappings = _files.Settings(tokens: false);
        noMappings.ClientCertificates.Clear();
        var noCa = new SecuritySettings { ClientCertificates = new() { ["ops-laptop"] = "admin" } };

        Assert.StartsWith("Orchestrator:Security:ClientCertificates is empty", Assert.Single(OrchestratorSettingsValidator.Validate(Settings(security: noMappings))), StringComparison.Ordinal);
        Assert.StartsWith("Orchestrator:Security:ClientCertificates needs Orchestrator:Security:Tls:ClientCaPath", Assert.Single(OrchestratorSettingsValidator.Validate(Settings(security: noCa))), StringComparison.Ordinal);
    }

    [Fact]
    public void Load_AllFilesGood_TlsTokensAndCertificates()
    {
        var security = _files.Load(_files.Settings());

        Assert.NotNull(security.ServerCertificate);
        Assert.True(security.ServerCertificate!.HasPrivateKey);
        Assert.Single(security.ClientCa!);
        Assert.Equal(Role.Operator, security.CertificateRoles["OPS-LAPTOP"]);
        Assert.False(security.Open);
    }

    [Fact]
    public void Load_MissingFiles_NameTheirKeys()
    {
        var settings = new SecuritySettings
        {
            Tls = new TlsSettings { CertificatePath = "/nonexistent/server.crt", KeyPath = _files.ServerKeyPath, ClientCaPath = "/nonexistent/ca.crt" },
            TokensFile = "/nonexistent/tokens",
        };

        var (security, errors) = ApiSecurity.Load(settings, DateTimeOffset.UtcNow);

        Assert.Null(security);
        Assert.Equal(
            [
                "Orchestrator:Security:Tls:CertificatePath: file '/nonexistent/server.crt' not found",
                "Orchestrator:Security:Tls:ClientCaPath: file '/nonexistent/ca.crt' not found",
                "Orchestrator:Security:TokensFile: file '/nonexistent/tokens' not found",
            ],
            errors);
    }

    [Fact]
    public void Load_KeyOfAnotherCertificate_Refused()
    {
        var (_, otherKey) = TestPki.Write(TestPki.CreateServer(_files.Ca), _files.Directory, "other");
        var settings = _files.Settings();
        settings.Tls.KeyPath = otherKey;

        var error = Assert.Single(ApiSecurity.Load(settings, DateTimeOffset.UtcNow).Errors);

        Assert.StartsWith("Orchestrator:Security:Tls:CertificatePath / Orchestrator:Security:Tls:KeyPath: cannot load the certificate", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_ExpiredServerCertificate_Refused()
    {
        var (certificate, key) = TestPki.Write(TestPki.CreateServer(_files.Ca, notAfter: DateTimeOffset.UtcNow.AddHours(-1)), _files.Directory, "expired");
        var settings = _files.Settings();
        settings.Tls.CertificatePath = certificate;
        settings.Tls.KeyPath = key;

        var error = Assert.Single(ApiSecurity.Load(settings, DateTimeOffset.UtcNow).Errors);

        Assert.StartsWith($"Orchestrator:Security:Tls:CertificatePath: the certificate in '{certificate}' expired on ", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_BadTokensFile_NamesKeyFileAndLine()
    {
        _files.WriteTokens(TokenFileTests.HashLine("a", "viewer", "a"), "# ok", TokenFileTests.HashLine("b", "root", "b"));

        var error = Assert.Single(ApiSecurity.Load(_files.Settings(), DateTimeOffset.UtcNow).Errors);

        Assert.Equal($"Orchestrator:Security:TokensFile: {_files.TokensFile}:3: unknown role 'root' (expected viewer, operator, admin)", error);
    }
}
