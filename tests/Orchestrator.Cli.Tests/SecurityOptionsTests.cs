using Google.Rpc;
using Grpc.Core;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Infrastructure;
using Orchestrator.Cli.Tests.Fakes;
using Orchestrator.Tests.Shared;

namespace Orchestrator.Cli.Tests;

/// <summary>Tokens, TLS files and the authentication exit codes.</summary>
public sealed class SecurityOptionsTests : IDisposable
{
    private const string Token = "tok-0123456789abcdef";
    private readonly DirectoryInfo _directory = Directory.CreateTempSubdirectory("orchestrator-cli-security-");

    public void Dispose() => _directory.Delete(recursive: true);

    private static FakeCallInvoker HostsInvoker() =>
        new FakeCallInvoker().On<ListHostsRequest, ListHostsResponse>("ListHosts", _ => new ListHostsResponse());

    private string WriteFile(string name, string text)
    {
        string path = Path.Combine(_directory.FullName, name);
        File.WriteAllText(path, text);
        return path;
    }

    private static string? Authorization(FakeCallInvoker invoker) =>
        Assert.Single(invoker.Calls).Options.Headers?.Get("authorization")?.Value;

    [Fact]
    public async Task NoToken_SendsNoAuthorizationHeader()
    {
        FakeCallInvoker invoker = HostsInvoker();

        CliRun run = await CliRun.RunAsync(invoker, "host", "list");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Null(Authorization(invoker));
    }

    [Theory]
    [InlineData("option", "Bearer from-option")]
    [InlineData("option-file", "Bearer from-option-file")]
    [InlineData("variable", "Bearer from-variable")]
    [InlineData("variable-file", "Bearer from-variable-file")]
    public async Task Token_OptionWinsOverVariableWhichWinsOverTheVariablesFile(string strongest, string expected)
    {
        string optionFile = WriteFile("option.token", "from-option-file\n");
        string variableFile = WriteFile("variable.token", "  from-variable-file\n\n");
        var variables = new Dictionary<string, string> { ["ORCHESTRATOR_TOKEN_FILE"] = variableFile };
        List<string> args = ["host", "list"];
        switch (strongest)
        {
            case "option":
                args.AddRange(["--token", "from-option"]);
                variables["ORCHESTRATOR_TOKEN"] = "from-variable";
                break;
            case "option-file":
                args.AddRange(["--token-file", optionFile]);
                variables["ORCHESTRATOR_TOKEN"] = "from-variable";
                break;
            case "variable":
                variables["ORCHESTRATOR_TOKEN"] = "from-variable";
                break;
        }

        FakeCallInvoker invoker = HostsInvoker();
        CliRun run = await CliRun.RunAsync(invoker, variables, [.. args]);

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal(expected, Authorization(invoker));
    }

    [Fact]
    public async Task Token_OnEveryCallOfAStreamToo()
    {
        FakeCallInvoker invoker = new FakeCallInvoker()
            .OnStream<WatchBackupRequest, WatchBackupResponse>("WatchBackup", new WatchBackupResponse { Run = Samples.CompletedRun() });

        CliRun run = await CliRun.RunAsync(invoker, new Dictionary<string, string> { ["ORCHESTRATOR_TOKEN"] = Token }, "backup", "watch", Samples.RunKey);

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal("Bearer " + Token, Authorization(invoker));
    }

    [Fact]
    public async Task Token_OptionAndFileOption_UsageError()
    {
        CliRun run = await CliRun.RunAsync(HostsInvoker(), "host", "list", "--token", Token, "--token-file", WriteFile("t", "x"));

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.Contains("--token and --token-file cannot be combined", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task TokenFile_Missing_UsageErrorNamingVariableAndPath()
    {
        string path = Path.Combine(_directory.FullName, "nope");

        CliRun run = await CliRun.RunAsync(HostsInvoker(), new Dictionary<string, string> { ["ORCHESTRATOR_TOKEN_FILE"] = path }, "host", "list");

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.StartsWith($"error: ORCHESTRATOR_TOKEN_FILE: cannot read the token file '{path}'", run.Stderr, StringComparison.Ordinal);
        Assert.Empty(run.Connections);
    }

    [Theory]
    [InlineData("\n  \n", "the token is empty")]
    [InlineData("two words-0123456789\n", "the token contains spaces, control or non-ASCII characters")]
    public async Task TokenFile_Unusable_UsageErrorThatNeverShowsTheToken(string content, string problem)
    {
        string path = WriteFile("bad.token", content);

        CliRun run = await CliRun.RunAsync(HostsInvoker(), "host", "list", "--token-file", path);

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.Equal($"error: --token-file ('{path}'): {problem}" + Environment.NewLine, run.Stderr);
        Assert.DoesNotContain("words-0123456789", run.Stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("http://10.0.0.12:7070", true)]
    [InlineData("http://kvm-02:7070", true)]
    [InlineData("http://127.0.0.1:7070", false)]
    [InlineData("http://localhost:7070", false)]
    [InlineData("http://[::1]:7070", false)]
    [InlineData("https://kvm-02:7443", false)]
    public async Task Token_OverPlainHttpToAnotherHost_Warns(string endpoint, bool warns)
    {
        CliRun run = await CliRun.RunAsync(HostsInvoker(), "host", "list", "--endpoint", endpoint, "--token", Token);

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal(warns, run.Stderr.Contains("warning: the bearer token goes to", StringComparison.Ordinal));
        Assert.DoesNotContain(Token, run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void GlobalSettings_ToString_NeverShowsTheToken()
    {
        var settings = new GlobalSettings(new GrpcConnection(new Uri("https://kvm-01:7443")), Output.OutputFormat.Table, TimeSpan.FromSeconds(1), new BearerToken(Token, "--token"));

        Assert.DoesNotContain(Token, settings.ToString(), StringComparison.Ordinal);
        Assert.Contains("(token from --token)", settings.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task CaCert_ForHttps_LoadedIntoTheConnection()
    {
        var ca = TestPki.CreateCa("Private CA");
        (string caPath, _) = TestPki.Write(ca, _directory.FullName, "ca");

        CliRun run = await CliRun.RunAsync(HostsInvoker(), "host", "list", "--endpoint", "https://kvm-01:7443", "--ca-cert", caPath);

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        GrpcConnection connection = Assert.Single(run.GrpcConnections);
        Assert.Equal(ca.Thumbprint, Assert.Single(connection.TrustedCa!).Thumbprint);
        Assert.Null(connection.ClientCertificate);
    }

    [Fact]
    public async Task ClientCert_FromVariables_WithItsKey()
    {
        var ca = TestPki.CreateCa("Private CA");
        (string certificate, string key) = TestPki.Write(TestPki.CreateClient(ca, "ops-laptop"), _directory.FullName, "client");
        var variables = new Dictionary<string, string>
        {
            ["ORCHESTRATOR_ENDPOINT"] = "https://kvm-01:7443",
            ["ORCHESTRATOR_CLIENT_CERT"] = certificate,
            ["ORCHESTRATOR_CLIENT_KEY"] = key,
        };

        CliRun run = await CliRun.RunAsync(HostsInvoker(), variables, "host", "list");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        X509Certificate2Assert(Assert.Single(run.GrpcConnections).ClientCertificate, "CN=ops-laptop");
    }

    [Fact]
    public async Task ClientCert_OnePemWithCertificateAndKey_NeedsNoKeyOption()
    {
        var ca = TestPki.CreateCa("Private CA");
        (string certificate, string key) = TestPki.Write(TestPki.CreateClient(ca, "ops-laptop"), _directory.FullName, "client");
        string combined = WriteFile("client.pem", File.ReadAllText(certificate) + File.ReadAllText(key));

        CliRun run = await CliRun.RunAsync(HostsInvoker(), "host", "list", "--endpoint", "https://kvm-01:7443", "--client-cert", combined);

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        X509Certificate2Assert(Assert.Single(run.GrpcConnections).ClientCertificate, "CN=ops-laptop");
    }

    [Fact]
    public async Task ClientCert_WithoutItsKey_UsageErrorNamingTheOption()
    {
        var ca = TestPki.CreateCa("Private CA");
        (string certificate, _) = TestPki.Write(TestPki.CreateClient(ca, "ops-laptop"), _directory.FullName, "client");

        CliRun run = await CliRun.RunAsync(HostsInvoker(), "host", "list", "--endpoint", "https://kvm-01:7443", "--client-cert", certificate);

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.StartsWith($"error: --client-cert: cannot read the client certificate and its key from '{certificate}'", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ClientKey_WithoutCertificate_UsageError()
    {
        CliRun run = await CliRun.RunAsync(HostsInvoker(), "host", "list", "--endpoint", "https://kvm-01:7443", "--client-key", WriteFile("k", "x"));

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.Contains("--client-key needs --client-cert (or ORCHESTRATOR_CLIENT_CERT)", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task TlsOptions_WithPlainHttpEndpoint_UsageError_VariablesIgnored()
    {
        CliRun withOption = await CliRun.RunAsync(HostsInvoker(), "host", "list", "--ca-cert", WriteFile("ca", "x"));
        CliRun withVariable = await CliRun.RunAsync(HostsInvoker(), new Dictionary<string, string> { ["ORCHESTRATOR_CA_CERT"] = "/nonexistent" }, "host", "list");

        Assert.Equal(ExitCodes.Usage, withOption.ExitCode);
        Assert.Contains("--ca-cert needs an https:// endpoint", withOption.Stderr, StringComparison.Ordinal);
        Assert.Equal(ExitCodes.Ok, withVariable.ExitCode);
    }

    [Fact]
    public async Task CaCert_NotPem_UsageError()
    {
        string path = WriteFile("ca.txt", "not a certificate");

        CliRun run = await CliRun.RunAsync(HostsInvoker(), "host", "list", "--endpoint", "https://kvm-01:7443", "--ca-cert", path);

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.Contains($"--ca-cert: '{path}' holds no PEM certificate", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Unauthenticated_ExitCode8WithTheServerMessageAndAHint()
    {
        FakeCallInvoker invoker = new FakeCallInvoker().Fail("ListHosts", Samples.RichError(
            Code.Unauthenticated,
            "not authenticated: unknown bearer token",
            new ErrorInfo { Reason = "UNAUTHENTICATED", Domain = "orchestrator.dev", Metadata = { ["method"] = "/orchestrator.v1.FleetService/ListHosts" } }));

        CliRun run = await CliRun.RunAsync(invoker, "host", "list", "--token", Token);

        Assert.Equal(ExitCodes.Unauthenticated, run.ExitCode);
        Assert.Equal(8, run.ExitCode);
        Assert.StartsWith("error: not authenticated: unknown bearer token" + Environment.NewLine, run.Stderr, StringComparison.Ordinal);
        Assert.Contains("hint: send a bearer token the server knows", run.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain(Token, run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task PermissionDenied_ExitCode9NamingTheRoles()
    {
        FakeCallInvoker invoker = new FakeCallInvoker().Fail("ListHosts", Samples.RichError(
            Code.PermissionDenied,
            "permission denied: BackupService/StartBackup needs role operator; grafana has role viewer",
            new ErrorInfo { Reason = "PERMISSION_DENIED", Domain = "orchestrator.dev", Metadata = { ["required_role"] = "operator", ["role"] = "viewer" } }));

        CliRun run = await CliRun.RunAsync(invoker, "host", "list");

        Assert.Equal(9, run.ExitCode);
        Assert.Equal(
            "error: permission denied: BackupService/StartBackup needs role operator; grafana has role viewer" + Environment.NewLine
            + "  reason: PERMISSION_DENIED (required_role=operator, role=viewer)" + Environment.NewLine,
            run.Stderr);
    }

    public static TheoryData<string, Exception, string, string> TransportFailures => new()
    {
        {
            "https://kvm-01:7443",
            new HttpRequestException("The SSL connection could not be established, see inner exception.", new System.Security.Authentication.AuthenticationException("The remote certificate is invalid because of errors in the certificate chain: UntrustedRoot")),
            "cannot reach the orchestrator at https://kvm-01:7443: The remote certificate is invalid because of errors in the certificate chain: UntrustedRoot",
            "hint: the server's certificate is not signed by a CA this system trusts: pass --ca-cert FILE (or $ORCHESTRATOR_CA_CERT) with the CA that signed it"
        },
        {
            "https://10.0.0.12:7443",
            new HttpRequestException("The SSL connection could not be established, see inner exception.", new System.Security.Authentication.AuthenticationException("The remote certificate is invalid according to the validation procedure: RemoteCertificateNameMismatch")),
            "cannot reach the orchestrator at https://10.0.0.12:7443: The remote certificate is invalid according to the validation procedure: RemoteCertificateNameMismatch",
            "hint: the server's certificate is not issued for '10.0.0.12': connect with a name or address the certificate lists"
        },
        {
            "https://kvm-01:7070",
            new HttpRequestException("The SSL connection could not be established, see inner exception.", new System.Security.Authentication.AuthenticationException("Cannot determine the frame size or a corrupted frame was received.")),
            "cannot reach the orchestrator at https://kvm-01:7070: Cannot determine the frame size or a corrupted frame was received.",
            "hint: the server does not speak TLS on this port; if it serves plain HTTP/2 (h2c), use an http:// endpoint"
        },
        {
            "http://kvm-01:7443",
            new HttpRequestException(HttpRequestError.ResponseEnded, "The response ended prematurely while waiting for the next frame from the server. (ResponseEnded)"),
            "cannot reach the orchestrator at http://kvm-01:7443: The response ended prematurely while waiting for the next frame from the server. (ResponseEnded)",
            "hint: the server closed the connection; if it serves TLS on this port, use an https:// endpoint"
        },
    };

    [Theory]
    [MemberData(nameof(TransportFailures))]
    public void TlsFailure_UnavailableWithAHint(string endpoint, Exception cause, string message, string hint)
    {
        // A failed handshake reaches the CLI as Internal "Error starting gRPC call"; the rest as Unavailable.
        StatusCode code = cause.InnerException is System.Security.Authentication.AuthenticationException ? StatusCode.Internal : StatusCode.Unavailable;
        var exception = new RpcException(new Grpc.Core.Status(code, "Error starting gRPC call.", cause));

        Errors.CliError error = Errors.RpcErrorMapper.Map(exception, new Uri(endpoint), TimeSpan.FromSeconds(30));

        Assert.Equal(ExitCodes.Unavailable, error.ExitCode);
        Assert.Equal(message, error.Message);
        Assert.Equal([hint], error.Details);
    }

    [Fact]
    public void ConnectionRefused_NoHint()
    {
        var cause = new HttpRequestException("Connection refused (kvm-01:7443)", new System.Net.Sockets.SocketException(111));
        var exception = new RpcException(new Grpc.Core.Status(StatusCode.Unavailable, "Error connecting to subchannel.", cause));

        Errors.CliError error = Errors.RpcErrorMapper.Map(exception, new Uri("https://kvm-01:7443"), TimeSpan.FromSeconds(30));

        Assert.Equal(ExitCodes.Unavailable, error.ExitCode);
        Assert.Empty(error.Details);
    }

    private static void X509Certificate2Assert(System.Security.Cryptography.X509Certificates.X509Certificate2? certificate, string subject)
    {
        Assert.NotNull(certificate);
        Assert.True(certificate.HasPrivateKey);
        Assert.Equal(subject, certificate.Subject);
    }
}
