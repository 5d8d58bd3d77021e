using Orchestrator.Silo.Security;
using Orchestrator.Tests.Shared;

namespace Orchestrator.UnitTests.Security;

public sealed class CallAuthenticatorTests : IDisposable
{
    private readonly SecurityFiles _files = new();

    public void Dispose() => _files.Dispose();

    [Fact]
    public void Authenticate_OpenApi_EverybodyIsAnonymousAdmin()
    {
        var authenticator = new CallAuthenticator(ApiSecurity.None, null);

        var result = authenticator.Authenticate(null, null);

        Assert.Equal(Caller.Anonymous, result.Caller);
        Assert.Equal(Role.Admin, result.Caller!.Role);
    }

    [Theory]
    [InlineData("Bearer " + SecurityFiles.ViewerToken, "dash", Role.Viewer)]
    [InlineData("bearer " + SecurityFiles.OperatorToken, "ops-bot", Role.Operator)]
    [InlineData("Bearer " + SecurityFiles.AdminToken, "alice", Role.Admin)]
    public void Authenticate_KnownToken_IsItsNameAndRole(string header, string name, Role role)
    {
        var result = _files.Authenticator().Authenticate(header, null);

        Assert.Equal(new Caller(name, role, Caller.ViaToken), result.Caller);
    }

    [Theory]
    [InlineData("Bearer not-a-known-token", "unknown bearer token")]
    [InlineData("Bearer " + SecurityFiles.AdminToken + "x", "unknown bearer token")]
    [InlineData("Basic YWRtaW46YWRtaW4=", "the authorization header is not 'Bearer <token>'")]
    [InlineData("Bearer ", "the authorization header is not 'Bearer <token>'")]
    public void Authenticate_WrongToken_IsRefusedWithoutEchoingIt(string header, string problem)
    {
        // A client certificate does not rescue a wrong token: the token is what the caller asked to be.
        var client = TestPki.CreateClient(_files.Ca, "ops-laptop");

        var result = _files.Authenticator().Authenticate(header, client);

        Assert.Null(result.Caller);
        Assert.Equal(problem, result.Problem);
    }

    [Fact]
    public void Authenticate_NoCredentials_SaysWhatTheServerAccepts()
    {
        Assert.Equal("no credentials: this server accepts a bearer token or a client certificate", _files.Authenticator().Authenticate(null, null).Problem);
        Assert.Equal("no credentials: this server accepts a bearer token", _files.Authenticator(certificates: false).Authenticate(null, null).Problem);
        Assert.Equal(
            "no credentials: this server accepts a client certificate (bearer tokens are not enabled)",
            _files.Authenticator(tokens: false).Authenticate("Bearer " + SecurityFiles.AdminToken, null).Problem);
    }

    [Theory]
    [InlineData("ops-laptop", Role.Operator)]
    [InlineData("auditor", Role.Viewer)] // CNs are matched like configuration keys: case-insensitive
    public void Authenticate_MappedClientCertificate_IsItsCnAndRole(string commonName, Role role)
    {
        var client = TestPki.CreateClient(_files.Ca, commonName, organizationalUnit: "admin");

        var result = _files.Authenticator().Authenticate(null, client);

        Assert.Equal(new Caller(commonName, role, Caller.ViaCertificate), result.Caller);
    }

    [Fact]
    public void Authenticate_TokenIgnoredWhenTokensAreOff_CertificateCounts()
    {
        var client = TestPki.CreateClient(_files.Ca, "ops-laptop");

        var result = _files.Authenticator(tokens: false).Authenticate("Bearer whatever", client);

        Assert.Equal("ops-laptop", result.Caller?.Name);
    }

    [Fact]
    public void Authenticate_UnmappedClientCertificate_IsRefusedNamingTheSetting()
    {
        var client = TestPki.CreateClient(_files.Ca, "stranger");

        var result = _files.Authenticator().Authenticate(null, client);

        Assert.Null(result.Caller);
        Assert.Equal("the client certificate CN=stranger has no role (Orchestrator:Security:ClientCertificates:stranger)", result.Problem);
    }

    [Fact]
    public void ClientCertificateTrust_OnlyCertificatesOfTheClientCa()
    {
        var ca = _files.Load(_files.Settings()).ClientCa!;
        var rogueCa = TestPki.CreateCa("Rogue CA");

        Assert.True(ClientCertificateTrust.IsTrusted(TestPki.CreateClient(_files.Ca, "ops-laptop"), null, ca, out _));
        Assert.False(ClientCertificateTrust.IsTrusted(TestPki.CreateClient(rogueCa, "ops-laptop"), null, ca, out var reason));
        Assert.NotEmpty(reason);
        // A server certificate of the right CA is not a client certificate (extended key usage).
        Assert.False(ClientCertificateTrust.IsTrusted(TestPki.CreateServer(_files.Ca), null, ca, out _));
    }
}
