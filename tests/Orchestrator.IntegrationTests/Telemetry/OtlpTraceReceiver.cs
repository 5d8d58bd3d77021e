using System.Globalization;
using System.Net;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Orchestrator.IntegrationTests.Telemetry.Otlp;

namespace Orchestrator.IntegrationTests.Telemetry;

/// <summary>One span as an exporter sent it, with the attributes of the resource (process) that sent it.</summary>
public sealed record ReceivedSpan(
    string TraceId,
    string SpanId,
    string? ParentSpanId,
    string Name,
    string Scope,
    DateTimeOffset Start,
    DateTimeOffset End,
    int StatusCode,
    IReadOnlyDictionary<string, string> Attributes,
    IReadOnlyDictionary<string, string> Resource)
{
    /// <summary>The resource's <c>service.instance.id</c> (a silo sets its host name), or null.</summary>
    public string? ServiceInstance => Resource.GetValueOrDefault("service.instance.id");

    /// <summary>The resource's <c>orchestrator.host</c>, or null.</summary>
    public string? Host => Resource.GetValueOrDefault("orchestrator.host");

    public string? Attribute(string key) => Attributes.GetValueOrDefault(key);

    public override string ToString() =>
        $"{Name} trace={TraceId} span={SpanId} parent={ParentSpanId ?? "-"} instance={ServiceInstance ?? "-"} [{string.Join(", ", Attributes.Select(a => $"{a.Key}={a.Value}"))}]";
}

/// <summary>
/// An in-process OTLP/gRPC trace receiver for tests: Kestrel, HTTP/2 without TLS, a free loopback port, implementing
/// <c>opentelemetry.proto.collector.trace.v1.TraceService/Export</c>. It records every span it gets, with its resource
/// attributes. Point exporters at <see cref="Endpoint"/> (see <see cref="ExporterEnvironment"/>). Other OTLP services
/// (metrics, logs) are not served: their exports fail with UNIMPLEMENTED, which exporters only log.
/// </summary>
public sealed class OtlpTraceReceiver : IAsyncDisposable
{
    private readonly List<ReceivedSpan> _spans = [];
    private readonly SemaphoreSlim _changed = new(0);
    private WebApplication? _app;

    private OtlpTraceReceiver()
    {
    }

    /// <summary><c>http://127.0.0.1:PORT</c>.</summary>
    public string Endpoint { get; private set; } = "";

    /// <summary>How many Export calls arrived.</summary>
    public int Exports { get; private set; }

    /// <summary>A copy of every span received so far, in arrival order.</summary>
    public IReadOnlyList<ReceivedSpan> Spans
    {
        get
        {
            lock (_spans)
            {
                return [.. _spans];
            }
        }
    }

    /// <summary>
    /// Environment for a process whose OpenTelemetry SDK should export here: OTLP over gRPC, with the batch processor
    /// flushing every 200 ms so spans arrive soon after they end.
    /// </summary>
    public IReadOnlyDictionary<string, string> ExporterEnvironment => new Dictionary<string, string>
    {
        ["OTEL_EXPORTER_OTLP_ENDPOINT"] = Endpoint,
        ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc",
        ["OTEL_BSP_SCHEDULE_DELAY"] = "200",
        ["OTEL_METRIC_EXPORT_INTERVAL"] = "3600000",
    };

    public static async Task<OtlpTraceReceiver> StartAsync()
    {
        var receiver = new OtlpTraceReceiver();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, o => o.Protocols = HttpProtocols.Http2));
        builder.Services.AddGrpc(o => o.MaxReceiveMessageSize = 64 << 20);
        builder.Services.AddSingleton(receiver);
        var app = builder.Build();
        app.MapGrpcService<TraceServiceImpl>();
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        receiver.Endpoint = $"http://127.0.0.1:{new Uri(address).Port}";
        receiver._app = app;
        return receiver;
    }

    /// <summary>Waits until <paramref name="condition"/> holds for the spans received so far; returns them. Throws on timeout, listing what arrived.</summary>
    public async Task<IReadOnlyList<ReceivedSpan>> WaitForAsync(Func<IReadOnlyList<ReceivedSpan>, bool> condition, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var spans = Spans;
            if (condition(spans))
            {
                return spans;
            }

            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero)
            {
                throw new TimeoutException(
                    $"OTLP receiver: {what} not seen within {timeout.TotalSeconds:0} s; {spans.Count} spans in {Exports} exports:\n" +
                    string.Join('\n', spans.TakeLast(60)));
            }

            await _changed.WaitAsync(left < TimeSpan.FromSeconds(1) ? left : TimeSpan.FromSeconds(1));
        }
    }

    /// <summary>Every span of one trace received so far.</summary>
    public IReadOnlyList<ReceivedSpan> Trace(string traceId) => [.. Spans.Where(s => string.Equals(s.TraceId, traceId, StringComparison.OrdinalIgnoreCase))];

    public async ValueTask DisposeAsync()
    {
        if (_app is not null)
        {
            using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await _app.StopAsync(stop.Token);
            await _app.DisposeAsync();
        }

        _changed.Dispose();
    }

    internal void Record(ExportTraceServiceRequest request)
    {
        var received = new List<ReceivedSpan>();
        foreach (var resourceSpans in request.ResourceSpans)
        {
            var resource = ToDictionary(resourceSpans.Resource?.Attributes);
            foreach (var scopeSpans in resourceSpans.ScopeSpans)
            {
                foreach (var span in scopeSpans.Spans)
                {
                    received.Add(new ReceivedSpan(
                        Convert.ToHexStringLower(span.TraceId.Span),
                        Convert.ToHexStringLower(span.SpanId.Span),
                        span.ParentSpanId.IsEmpty ? null : Convert.ToHexStringLower(span.ParentSpanId.Span),
                        span.Name,
                        scopeSpans.Scope?.Name ?? "",
                        FromUnixNanos(span.StartTimeUnixNano),
                        FromUnixNanos(span.EndTimeUnixNano),
                        span.Status?.Code ?? 0,
                        ToDictionary(span.Attributes),
                        resource));
                }
            }
        }

        lock (_spans)
        {
            _spans.AddRange(received);
            Exports++;
        }

        _changed.Release();
    }

    private static DateTimeOffset FromUnixNanos(ulong nanos) => DateTimeOffset.UnixEpoch.AddTicks((long)(nanos / 100));

    private static Dictionary<string, string> ToDictionary(IEnumerable<KeyValue>? attributes)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var kv in attributes ?? [])
        {
            result[kv.Key] = Text(kv.Value);
        }

        return result;
    }

    private static string Text(AnyValue? value) => value?.ValueCase switch
    {
        AnyValue.ValueOneofCase.StringValue => value.StringValue,
        AnyValue.ValueOneofCase.BoolValue => value.BoolValue ? "true" : "false",
        AnyValue.ValueOneofCase.IntValue => value.IntValue.ToString(CultureInfo.InvariantCulture),
        AnyValue.ValueOneofCase.DoubleValue => value.DoubleValue.ToString("R", CultureInfo.InvariantCulture),
        AnyValue.ValueOneofCase.ArrayValue => "[" + string.Join(",", value.ArrayValue.Values.Select(Text)) + "]",
        AnyValue.ValueOneofCase.BytesValue => Convert.ToHexStringLower(value.BytesValue.Span),
        _ => "",
    };

    private sealed class TraceServiceImpl(OtlpTraceReceiver receiver) : TraceService.TraceServiceBase
    {
        public override Task<ExportTraceServiceResponse> Export(ExportTraceServiceRequest request, ServerCallContext context)
        {
            receiver.Record(request);
            return Task.FromResult(new ExportTraceServiceResponse());
        }
    }
}
