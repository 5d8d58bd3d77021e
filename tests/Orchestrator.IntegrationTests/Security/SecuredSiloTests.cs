using System.Text.Json;
using Orchestrator.IntegrationTests.Infrastructure;

namespace Orchestrator.IntegrationTests.Security;

/// <summary>
/// The real `orchestrator` CLI against a real silo process serving gRPC over TLS with bearer tokens and client
/// certificates: who is let in, who is refused, and what the refusals say.
/// </summary>
public sealed class SecuredSiloTests(SecuredSiloFixture fixture) : IClassFixture<SecuredSiloFixture>
{
    private const int Unauthenticated = 8;
    private const int PermissionDenied = 9;
    private const int Unavailable = 4;

    private Dictionary<string, string?> Trusting(string? token = null, string? tokenFile = null) => new()
    {
        ["ORCHESTRATOR_CA_CERT"] = fixture.CaPath,
        ["ORCHESTRATOR_TOKEN"] = token,
        ["ORCHESTRATOR_TOKEN_FILE"] = tokenFile,
    };

    [Fact]
    public async Task NoToken_ExitsUnauthenticated()
    {
        var result = await fixture.CliAsync(Trusting(), "vm", "list");

        Assert.True(result.ExitCode == Unauthenticated, ProcessRunner.Describe(result));
        Assert.Empty(result.StandardOutput);
        Assert.StartsWith("error: not authenticated: no credentials: this server accepts a bearer token or a client certificate", result.StandardError, StringComparison.Ordinal);
        Assert.Contains("reason: UNAUTHENTICATED", result.StandardError, StringComparison.Ordinal);
    }

    [Fact]
    public async Task UnknownToken_ExitsUnauthenticated_AndIsNotPrinted()
    {
        var result = await fixture.CliAsync(Trusting(token: "not-a-token-anyone-has"), "vm", "list");

        Assert.True(result.ExitCode == Unauthenticated, ProcessRunner.Describe(result));
        Assert.Contains("not authenticated: unknown bearer token", result.StandardError, StringComparison.Ordinal);
        Assert.DoesNotContain("not-a-token-anyone-has", result.StandardError, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Viewer_ListsVms_ButStartingABackupIsRefusedNamingOperator()
    {
        var list = await fixture.CliAsync(Trusting(tokenFile: fixture.ViewerTokenFile), "vm", "list", "--format", "json");

        Assert.True(list.ExitCode == 0, ProcessRunner.Describe(list));
        using (var json = JsonDocument.Parse(list.StandardOutput))
        {
            Assert.Equal(5, json.RootElement.GetArrayLength());
        }

        var backup = await fixture.CliAsync(Trusting(tokenFile: fixture.ViewerTokenFile), "backup", "start", "demo-01/web-1");

        Assert.True(backup.ExitCode == PermissionDenied, ProcessRunner.Describe(backup));
        Assert.Empty(backup.StandardOutput);
        Assert.StartsWith("error: permission denied: BackupService/StartBackup needs role operator; grafana has role viewer", backup.StandardError, StringComparison.Ordinal);
        Assert.Contains("reason: PERMISSION_DENIED", backup.StandardError, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Operator_StartsABackup_ButCannotApplyAPolicy()
    {
        var backup = await fixture.CliAsync(Trusting(token: fixture.OperatorToken), "backup", "start", "demo-01/web-2", "--format", "json");

        Assert.True(backup.ExitCode == 0, ProcessRunner.Describe(backup));
        using (var json = JsonDocument.Parse(backup.StandardOutput))
        {
            Assert.StartsWith("demo-01/web-2/b-", json.RootElement.GetProperty("key").GetString(), StringComparison.Ordinal);
        }

        var apply = await fixture.CliAsync(Trusting(token: fixture.OperatorToken), "policy", "apply", "-f", WritePolicy("sec-operator"));

        Assert.True(apply.ExitCode == PermissionDenied, ProcessRunner.Describe(apply));
        Assert.Contains("needs role admin; ops-bot has role operator", apply.StandardError, StringComparison.Ordinal);
        Assert.Contains(
            "audit: /orchestrator.v1.BackupService/StartBackup by ops-bot (role operator, via token) from ipv4:127.0.0.1:",
            fixture.Silo.Log,
            StringComparison.Ordinal);
    }

    [Fact]
    public async Task Admin_AppliesAPolicy()
    {
        var apply = await fixture.CliAsync(null, "policy", "apply", "-f", WritePolicy("sec-admin"), "--ca-cert", fixture.CaPath, "--token", fixture.AdminToken);

        Assert.True(apply.ExitCode == 0, ProcessRunner.Describe(apply));
        Assert.Contains("Created policy sec-admin (version 1)", apply.StandardOutput, StringComparison.Ordinal);
        Assert.Contains("audit: /orchestrator.v1.PolicyService/ApplyPolicy by alice (role admin, via token)", fixture.Silo.Log, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ClientCertificate_ActsWithItsMappedRole()
    {
        string[] certificate = ["--ca-cert", fixture.CaPath, "--client-cert", fixture.ClientCertificatePath, "--client-key", fixture.ClientKeyPath];

        var list = await fixture.CliAsync(null, ["host", "list", "--format", "json", .. certificate]);
        var delete = await fixture.CliAsync(null, ["policy", "delete", "sec-anything", .. certificate]);

        Assert.True(list.ExitCode == 0, ProcessRunner.Describe(list));
        Assert.Contains("demo-01", list.StandardOutput, StringComparison.Ordinal);
        Assert.True(delete.ExitCode == PermissionDenied, ProcessRunner.Describe(delete));
        Assert.Contains("PolicyService/DeletePolicy needs role admin; ops-laptop has role operator", delete.StandardError, StringComparison.Ordinal);
    }

    [Fact]
    public async Task WrongCa_ServerCertificateNotTrusted()
    {
        var result = await fixture.CliAsync(new Dictionary<string, string?> { ["ORCHESTRATOR_CA_CERT"] = fixture.RogueCaPath, ["ORCHESTRATOR_TOKEN"] = fixture.AdminToken }, "host", "list");

        Assert.True(result.ExitCode == Unavailable, ProcessRunner.Describe(result));
        Assert.Contains($"cannot reach the orchestrator at {fixture.HttpsEndpoint}: The remote certificate is invalid", result.StandardError, StringComparison.Ordinal);
        Assert.Contains("hint: the server's certificate is not signed by the CA given with --ca-cert", result.StandardError, StringComparison.Ordinal);
    }

    [Fact]
    public async Task WrongCa_ClientCertificateOfAnotherCaRefused()
    {
        var result = await fixture.CliAsync(
            null, "host", "list", "--ca-cert", fixture.CaPath, "--client-cert", fixture.RogueClientCertificatePath, "--client-key", fixture.RogueClientKeyPath);

        Assert.True(result.ExitCode == Unavailable, ProcessRunner.Describe(result));
        Assert.Empty(result.StandardOutput);
        Assert.Contains("hint: the server may have refused the client certificate", result.StandardError, StringComparison.Ordinal);
        Assert.Contains("Client certificate 'CN=ops-laptop' refused: it does not chain to Orchestrator:Security:Tls:ClientCaPath", fixture.Silo.Log, StringComparison.Ordinal);
    }

    [Fact]
    public async Task PlainHttpToTheTlsPort_FailsSayingUseHttps()
    {
        var result = await fixture.CliAsync(null, "host", "list", "--endpoint", $"http://127.0.0.1:{fixture.Silo.GrpcPort}", "--token", fixture.AdminToken);

        Assert.True(result.ExitCode == Unavailable, ProcessRunner.Describe(result));
        Assert.Contains($"cannot reach the orchestrator at http://127.0.0.1:{fixture.Silo.GrpcPort}", result.StandardError, StringComparison.Ordinal);
        Assert.Contains("use an https:// endpoint", result.StandardError, StringComparison.Ordinal);
    }

    [Fact]
    public async Task HealthPort_StaysPlainHttp()
    {
        using var http = new HttpClient();

        Assert.Equal("Healthy", await http.GetStringAsync($"http://127.0.0.1:{fixture.Silo.HttpPort}/health/ready"));
    }

    [Fact]
    public void SiloLog_NeverHoldsAToken()
    {
        foreach (var token in new[] { fixture.ViewerToken, fixture.OperatorToken, fixture.AdminToken })
        {
            Assert.DoesNotContain(token, fixture.Silo.Log, StringComparison.Ordinal);
        }
    }

    private string WritePolicy(string name)
    {
        var path = Path.Combine(fixture.Directory, $"{name}.yaml");
        File.WriteAllText(path, $"name: {name}\nkind: checkpoint\nselector:\n  labels: {{env: dev}}\n");
        return path;
    }
}

/// <summary>Security settings that must stop the silo at start (exit 2) naming the key, file and line.</summary>
public sealed class SecuritySettingsErrorTests
{
    [Fact]
    public async Task Silo_MalformedTokensFile_ExitsNamingFileAndLine()
    {
        var dir = System.IO.Directory.CreateTempSubdirectory("orchestrator-security-config-").FullName;
        try
        {
            var tokens = Path.Combine(dir, "tokens");
            File.WriteAllText(tokens, "# ok\n" + SecuredSiloFixture.HashLine("t", "viewer", "v") + "\nsha256:1234 admin root\n");
            await using var silo = new SiloProcess("demo-01", Path.Combine(dir, "silo"), new Dictionary<string, string> { ["Orchestrator__Security__TokensFile"] = tokens });

            silo.Start();

            Assert.Equal(2, await silo.WaitForExitAsync(TimeSpan.FromSeconds(60)));
            Assert.Contains($"Orchestrator:Security:TokensFile: {tokens}:3: 'sha256:1234...' is not sha256: followed by exactly 64 hex digits", silo.Log, StringComparison.Ordinal);
        }
        finally
        {
            System.IO.Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Silo_NonLoopbackWithoutTlsAndAuthentication_ExitsNamingTheKeys()
    {
        var dir = System.IO.Directory.CreateTempSubdirectory("orchestrator-security-config-").FullName;
        try
        {
            await using var silo = new SiloProcess("demo-01", Path.Combine(dir, "silo"), new Dictionary<string, string> { ["Orchestrator__Endpoints__BindAddress"] = "0.0.0.0" });

            silo.Start();

            Assert.Equal(2, await silo.WaitForExitAsync(TimeSpan.FromSeconds(60)));
            Assert.Contains("Orchestrator:Endpoints:BindAddress is 0.0.0.0, not a loopback address, but the gRPC port has neither TLS nor authentication", silo.Log, StringComparison.Ordinal);
            Assert.Contains("Orchestrator:Security:AllowInsecureRemote=true", silo.Log, StringComparison.Ordinal);
        }
        finally
        {
            System.IO.Directory.Delete(dir, recursive: true);
        }
    }
}
