using System.Security.Cryptography.X509Certificates;
using Grpc.Core;
using Microsoft.AspNetCore.Http;

namespace Orchestrator.UnitTests.Security;

/// <summary>A server call as an interceptor sees it: method, headers, peer and the connection's client certificate.</summary>
internal sealed class TestServerCallContext : ServerCallContext
{
    private readonly Metadata _headers = [];
    private readonly Dictionary<object, object> _userState = [];

    public TestServerCallContext(string method, string? authorization = null, X509Certificate2? clientCertificate = null)
    {
        MethodCore = method;
        if (authorization is not null)
        {
            _headers.Add("authorization", authorization);
        }

        // Grpc.AspNetCore's GetHttpContext() reads this key when the context is not its own.
        var http = new DefaultHttpContext();
        http.Connection.ClientCertificate = clientCertificate;
        _userState["__HttpContext"] = http;
    }

    protected override string MethodCore { get; }

    protected override string HostCore => "127.0.0.1:7070";

    protected override string PeerCore => "ipv4:127.0.0.1:50000";

    protected override DateTime DeadlineCore => DateTime.MaxValue;

    protected override Metadata RequestHeadersCore => _headers;

    protected override CancellationToken CancellationTokenCore => CancellationToken.None;

    protected override Metadata ResponseTrailersCore { get; } = [];

    protected override Status StatusCore { get; set; }

    protected override WriteOptions? WriteOptionsCore { get; set; }

    protected override AuthContext AuthContextCore { get; } = new(null, []);

    protected override IDictionary<object, object> UserStateCore => _userState;

    protected override ContextPropagationToken CreatePropagationTokenCore(ContextPropagationOptions? options) => throw new NotSupportedException();

    protected override Task WriteResponseHeadersAsyncCore(Metadata responseHeaders) => Task.CompletedTask;
}
