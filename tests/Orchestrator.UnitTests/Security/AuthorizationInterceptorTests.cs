using System.Diagnostics;
using Google.Rpc;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using Orchestrator.Silo.Security;
using Orchestrator.Tests.Shared;

namespace Orchestrator.UnitTests.Security;

public sealed class AuthorizationInterceptorTests : IDisposable
{
    private const string StartBackup = "/orchestrator.v1.BackupService/StartBackup";
    private const string ListVms = "/orchestrator.v1.FleetService/ListVms";
    private const string ApplyPolicy = "/orchestrator.v1.PolicyService/ApplyPolicy";

    private readonly SecurityFiles _files = new();
    private readonly RecordingLogger _log = new();

    public void Dispose() => _files.Dispose();

    private AuthorizationInterceptor Interceptor(CallAuthenticator? authenticator = null) =>
        new(authenticator ?? _files.Authenticator(), _log);

    /// <summary>Runs a unary call through the interceptor; true when the service method ran.</summary>
    private async Task<bool> CallAsync(TestServerCallContext context, AuthorizationInterceptor? interceptor = null, Exception? fails = null)
    {
        var ran = false;
        await (interceptor ?? Interceptor()).UnaryServerHandler<string, string>("request", context, (_, _) =>
        {
            ran = true;
            return fails is null ? Task.FromResult("response") : Task.FromException<string>(fails);
        });
        return ran;
    }

    [Theory]
    [InlineData(ListVms, SecurityFiles.ViewerToken)]
    [InlineData(StartBackup, SecurityFiles.OperatorToken)]
    [InlineData(ApplyPolicy, SecurityFiles.AdminToken)]
    [InlineData(ListVms, SecurityFiles.AdminToken)]
    public async Task Call_RoleHighEnough_RunsTheService(string method, string token)
    {
        Assert.True(await CallAsync(new TestServerCallContext(method, "Bearer " + token)));
    }

    [Fact]
    public async Task Call_NoCredentials_UnauthenticatedAndNothingRuns()
    {
        var ran = false;
        var e = await Assert.ThrowsAsync<RpcException>(async () => ran = await CallAsync(new TestServerCallContext(ListVms)));

        Assert.False(ran);
        Assert.Equal(StatusCode.Unauthenticated, e.StatusCode);
        var status = e.GetRpcStatus()!;
        Assert.Equal("not authenticated: no credentials: this server accepts a bearer token or a client certificate", status.Message);
        var info = status.GetDetail<ErrorInfo>()!;
        Assert.Equal("UNAUTHENTICATED", info.Reason);
        Assert.Equal("orchestrator.dev", info.Domain);
        Assert.Equal(ListVms, info.Metadata["method"]);
    }

    [Fact]
    public async Task Call_UnknownToken_UnauthenticatedAndTheTokenIsNeverLogged()
    {
        var e = await Assert.ThrowsAsync<RpcException>(() => CallAsync(new TestServerCallContext(ListVms, "Bearer s3cret-guess")));

        Assert.Equal(StatusCode.Unauthenticated, e.StatusCode);
        Assert.DoesNotContain("s3cret-guess", e.Status.Detail, StringComparison.Ordinal);
        Assert.Contains(_log.Lines, l => l.Contains("not authenticated: unknown bearer token", StringComparison.Ordinal));
        Assert.DoesNotContain(_log.Lines, l => l.Contains("s3cret-guess", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Call_ViewerStartsBackup_PermissionDeniedNamingBothRoles()
    {
        var ran = false;
        var e = await Assert.ThrowsAsync<RpcException>(async () =>
            ran = await CallAsync(new TestServerCallContext(StartBackup, "Bearer " + SecurityFiles.ViewerToken)));

        Assert.False(ran);
        Assert.Equal(StatusCode.PermissionDenied, e.StatusCode);
        var status = e.GetRpcStatus()!;
        Assert.Equal("permission denied: BackupService/StartBackup needs role operator; dash has role viewer", status.Message);
        var info = status.GetDetail<ErrorInfo>()!;
        Assert.Equal("PERMISSION_DENIED", info.Reason);
        Assert.Equal("operator", info.Metadata["required_role"]);
        Assert.Equal("viewer", info.Metadata["role"]);
        Assert.Equal("dash", info.Metadata["caller"]);
    }

    [Fact]
    public async Task Call_OperatorAppliesPolicy_PermissionDeniedNeedsAdmin()
    {
        var e = await Assert.ThrowsAsync<RpcException>(() => CallAsync(new TestServerCallContext(ApplyPolicy, "Bearer " + SecurityFiles.OperatorToken)));

        Assert.Equal(StatusCode.PermissionDenied, e.StatusCode);
        Assert.Equal("admin", e.GetRpcStatus()!.GetDetail<ErrorInfo>()!.Metadata["required_role"]);
    }

    [Fact]
    public async Task Call_MethodNotInTheTable_RefusedEvenToAdminsAndOnAnOpenApi()
    {
        var open = Interceptor(new CallAuthenticator(ApiSecurity.None, null));

        var asAdmin = await Assert.ThrowsAsync<RpcException>(() => CallAsync(new TestServerCallContext("/orchestrator.v1.FleetService/DropEverything", "Bearer " + SecurityFiles.AdminToken)));
        var asAnyone = await Assert.ThrowsAsync<RpcException>(() => CallAsync(new TestServerCallContext("/orchestrator.v1.FleetService/DropEverything"), open));

        Assert.Equal(StatusCode.PermissionDenied, asAdmin.StatusCode);
        Assert.Equal(StatusCode.PermissionDenied, asAnyone.StatusCode);
        Assert.Contains("no entry in the role table", asAnyone.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Call_OpenApi_EverythingRunsAsAnonymous()
    {
        var open = Interceptor(new CallAuthenticator(ApiSecurity.None, null));

        Assert.True(await CallAsync(new TestServerCallContext(ApplyPolicy), open));
        Assert.Contains(_log.Lines, l => l.Contains("audit: " + ApplyPolicy + " by anonymous (role admin, via open)", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Call_ClientCertificate_UsesItsMappedRole()
    {
        var laptop = TestPki.CreateClient(_files.Ca, "ops-laptop");
        var auditor = TestPki.CreateClient(_files.Ca, "auditor");

        Assert.True(await CallAsync(new TestServerCallContext(StartBackup, clientCertificate: laptop)));
        var e = await Assert.ThrowsAsync<RpcException>(() => CallAsync(new TestServerCallContext(StartBackup, clientCertificate: auditor)));
        Assert.Equal("permission denied: BackupService/StartBackup needs role operator; auditor has role viewer", e.Status.Detail);
    }

    [Fact]
    public async Task Call_Mutating_AuditedWithCallerAndOutcome_ReadsAreNot()
    {
        await CallAsync(new TestServerCallContext(StartBackup, "Bearer " + SecurityFiles.OperatorToken));
        await Assert.ThrowsAsync<RpcException>(() => CallAsync(
            new TestServerCallContext(ApplyPolicy, "Bearer " + SecurityFiles.AdminToken), fails: new RpcException(new Grpc.Core.Status(StatusCode.InvalidArgument, "bad"))));
        await CallAsync(new TestServerCallContext(ListVms, "Bearer " + SecurityFiles.ViewerToken));

        Assert.Equal(
            [
                $"audit: {StartBackup} by ops-bot (role operator, via token) from ipv4:127.0.0.1:50000: OK",
                $"audit: {ApplyPolicy} by alice (role admin, via token) from ipv4:127.0.0.1:50000: InvalidArgument",
            ],
            _log.Lines.Where(l => l.StartsWith("audit:", StringComparison.Ordinal)));
        Assert.DoesNotContain(_log.Lines, l => l.Contains("token-0123456789", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Call_CallerOnTheRequestSpan()
    {
        using var source = new ActivitySource("test.security");
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == "test.security",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
        };
        ActivitySource.AddActivityListener(listener);
        using var request = source.StartActivity("request")!;

        await CallAsync(new TestServerCallContext(StartBackup, "Bearer " + SecurityFiles.OperatorToken));

        Assert.Equal("ops-bot", request.GetTagItem("enduser.id"));
        Assert.Equal("operator", request.GetTagItem("enduser.role"));
        Assert.Equal("token", request.GetTagItem("orchestrator.auth"));
    }

    [Fact]
    public async Task ServerStreaming_ViewerWatches_DeniedWithoutAToken()
    {
        var interceptor = Interceptor();
        var ran = false;
        Task Watch(TestServerCallContext context) => interceptor.ServerStreamingServerHandler<string, string>("r", null!, context, (_, _, _) =>
        {
            ran = true;
            return Task.CompletedTask;
        });

        await Assert.ThrowsAsync<RpcException>(() => Watch(new TestServerCallContext("/orchestrator.v1.BackupService/WatchBackup")));
        Assert.False(ran);
        await Watch(new TestServerCallContext("/orchestrator.v1.BackupService/WatchBackup", "Bearer " + SecurityFiles.ViewerToken));
        Assert.True(ran);
    }

    /// <summary>Keeps every formatted log line.</summary>
    private sealed class RecordingLogger : ILogger<AuthorizationInterceptor>
    {
        public List<string> Lines { get; } = [];

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            lock (Lines)
            {
                Lines.Add(formatter(state, exception));
            }
        }
    }
}
