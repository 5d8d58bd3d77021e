using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace Orchestrator.Silo.Hosting;

public static class TelemetryExtensions
{
    /// <summary>The activity sources and meters a silo exports; OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.</summary>
    public static readonly string[] ActivitySources = [Grains.Telemetry.Name, "Microsoft.Orleans.Runtime", "Microsoft.Orleans.Application", "Microsoft.Orleans.Storage"];

    /// <param name="prometheus">Also keep the metrics for the Prometheus scrape endpoint (/metrics, mapped by the endpoints).</param>
    public static WebApplicationBuilder AddOrchestratorTelemetry(this WebApplicationBuilder builder, string host, bool prometheus)
    {
        var otlp = !string.IsNullOrWhiteSpace(builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]);
        builder.Services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService("orchestrator-silo", serviceInstanceId: host).AddAttributes([new("orchestrator.host", host)]))
            .WithTracing(t =>
            {
                t.AddSource(ActivitySources).AddAspNetCoreInstrumentation();
                if (otlp)
                {
                    t.AddOtlpExporter();
                }
            })
            .WithMetrics(m =>
            {
                m.AddMeter(Grains.Telemetry.Name, "Microsoft.Orleans").AddAspNetCoreInstrumentation();
                if (otlp)
                {
                    m.AddOtlpExporter();
                }

                if (prometheus)
                {
                    m.AddPrometheusExporter();
                }
            });
        return builder;
    }
}
