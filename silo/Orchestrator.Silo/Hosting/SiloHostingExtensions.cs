using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Orchestrator.Grains;
using Orchestrator.Grains.Backups;
using Orchestrator.Hypervisor;
using Orchestrator.Silo.Configuration;
using Orchestrator.Silo.Persistence;
using Orchestrator.Silo.Security;
using Orchestrator.Silo.Services;
using Orleans.Dashboard;

namespace Orchestrator.Silo.Hosting;

public static class SiloHostingExtensions
{
    /// <summary>Binds and validates the settings; throws <see cref="SettingsException"/> naming each bad setting.</summary>
    public static OrchestratorSettings AddOrchestratorSettings(this WebApplicationBuilder builder)
    {
        var section = builder.Configuration.GetSection(OrchestratorSettings.Section);
        OrchestratorSettings settings;
        try
        {
            settings = section.Get<OrchestratorSettings>() ?? new OrchestratorSettings();
        }
        catch (InvalidOperationException e)
        {
            throw new SettingsException([$"{OrchestratorSettings.Section}: {e.Message}"]);
        }

        var backup = builder.Configuration.GetSection($"{OrchestratorSettings.Section}:Backup").Get<BackupOptions>() ?? new BackupOptions();
        var policies = builder.Configuration.GetSection($"{OrchestratorSettings.Section}:Policies").Get<Grains.Policies.PolicyOptions>() ?? new Grains.Policies.PolicyOptions();
        var index = builder.Configuration.GetSection($"{OrchestratorSettings.Section}:FleetIndex").Get<Grains.Fleet.FleetIndexOptions>() ?? new Grains.Fleet.FleetIndexOptions();
        var errors = OrchestratorSettingsValidator.Validate(settings)
            .Concat(OrchestratorSettingsValidator.ValidateRemoved(builder.Configuration))
            .Concat(OrchestratorSettingsValidator.Validate(backup))
            .Concat(OrchestratorSettingsValidator.Validate(policies))
            .Concat(OrchestratorSettingsValidator.Validate(index))
            .ToList();
        var (security, securityErrors) = ApiSecurity.Load(settings.Security, DateTimeOffset.UtcNow);
        errors.AddRange(securityErrors);
        if (errors.Count > 0)
        {
            throw new SettingsException(errors);
        }

        builder.Services.AddSingleton(Microsoft.Extensions.Options.Options.Create(settings));
        builder.Services.AddSingleton(security!);
        return settings;
    }

    /// <summary>The Orleans silo: persistence for the mode, host-affine grains, the local hypervisor, the host agent.</summary>
    public static WebApplicationBuilder AddOrchestratorSilo(this WebApplicationBuilder builder, OrchestratorSettings settings)
    {
        builder.Services.AddSingleton<IHypervisor>(sp =>
            HypervisorConnector.ConnectAsync(settings.Host, sp.GetRequiredService<ILoggerFactory>()).GetAwaiter().GetResult());
        builder.UseOrleans(silo =>
        {
            silo.AddOrchestratorPersistence(settings);
            silo.AddOrchestratorGrains(settings.Host.Name);
            silo.AddActivityPropagation();
            if (settings.Endpoints.DashboardEnabled)
            {
                silo.AddDashboard();
            }
        });
        builder.Services.AddHostedService<HostAgent>();
        builder.Services.Configure<BackupOptions>(builder.Configuration.GetSection($"{OrchestratorSettings.Section}:Backup"));
        builder.Services.Configure<Grains.Policies.PolicyOptions>(builder.Configuration.GetSection($"{OrchestratorSettings.Section}:Policies"));
        builder.Services.Configure<Grains.Fleet.FleetIndexOptions>(builder.Configuration.GetSection($"{OrchestratorSettings.Section}:FleetIndex"));
        return builder;
    }

    /// <summary>
    /// Kestrel: gRPC on its own port (HTTP/2 over TLS when Security:Tls is set, else h2c), behind the role check;
    /// health and the dashboard on an HTTP/1.1 port.
    /// </summary>
    public static WebApplicationBuilder AddOrchestratorEndpoints(this WebApplicationBuilder builder, OrchestratorSettings settings)
    {
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            var address = settings.Endpoints.ParsedBindAddress;
            var security = kestrel.ApplicationServices.GetRequiredService<ApiSecurity>();
            kestrel.Listen(address, settings.Endpoints.GrpcPort, o =>
            {
                o.Protocols = HttpProtocols.Http2;
                if (security.ServerCertificate is not null)
                {
                    o.UseHttps(HttpsOptions(security, kestrel.ApplicationServices));
                }
            });
            kestrel.Listen(address, settings.Endpoints.HttpPort, o => o.Protocols = HttpProtocols.Http1);
        });
        builder.Services.AddSingleton(sp =>
        {
            var security = sp.GetRequiredService<ApiSecurity>();
            var tokens = security is { TokensFile: { } file, Tokens: { } loaded }
                ? new TokenStore(file, loaded, sp.GetService<TimeProvider>() ?? TimeProvider.System, sp.GetRequiredService<ILogger<TokenStore>>())
                : null;
            return new CallAuthenticator(security, tokens);
        });
        builder.Services.AddGrpc(o =>
        {
            // Bounded both ways: a request is refused before it is parsed (RESOURCE_EXHAUSTED), a reply never outgrows what a client reads.
            o.MaxReceiveMessageSize = settings.Endpoints.MaxRequestBytes;
            o.MaxSendMessageSize = settings.Endpoints.MaxResponseBytes;
            // Outermost first: a refused call never reaches the error mapping or a service.
            o.Interceptors.Add<AuthorizationInterceptor>();
            o.Interceptors.Add<ErrorInterceptor>();
        });
        builder.Services.AddGrpcReflection();
        builder.Services.AddHealthChecks()
            .AddCheck<SiloReadyHealthCheck>("silo", tags: ["ready"])
            .AddCheck<HypervisorHealthCheck>("hypervisor", tags: ["ready"]);
        return builder;
    }

    public static WebApplication MapOrchestratorEndpoints(this WebApplication app, OrchestratorSettings settings)
    {
        var httpPort = $"*:{settings.Endpoints.HttpPort}";
        app.MapOrchestratorGrpc(settings.Endpoints.GrpcPort);
        app.MapHealthChecks("/health/live", new HealthCheckOptions { Predicate = _ => false }).RequireHost(httpPort);
        app.MapHealthChecks("/health/ready", new HealthCheckOptions { Predicate = c => c.Tags.Contains("ready") }).RequireHost(httpPort);
        if (settings.Endpoints.DashboardEnabled)
        {
            // The HTTP port only: on the gRPC port it would sit past TLS and the role check, unauthenticated.
            app.MapOrleansDashboard("/dashboard").RequireHost(httpPort);
        }

        if (settings.Endpoints.MetricsEnabled)
        {
            // The HTTP port only, like the dashboard: unauthenticated, so never past the gRPC port's TLS and role check.
            app.MapPrometheusScrapingEndpoint("/metrics").RequireHost(httpPort);
        }

        return app;
    }

    /// <summary>Every gRPC service the silo serves, on the gRPC port only. Each method needs an entry in <see cref="RpcRoles.Table"/>.</summary>
    internal static IEndpointRouteBuilder MapOrchestratorGrpc(this IEndpointRouteBuilder app, int grpcPort)
    {
        var host = $"*:{grpcPort}";
        app.MapGrpcService<FleetService>().RequireHost(host);
        app.MapGrpcService<CheckpointService>().RequireHost(host);
        app.MapGrpcService<BackupService>().RequireHost(host);
        app.MapGrpcService<PolicyService>().RequireHost(host);
        app.MapGrpcReflectionService().RequireHost(host);
        return app;
    }

    private static HttpsConnectionAdapterOptions HttpsOptions(ApiSecurity security, IServiceProvider services)
    {
        var options = new HttpsConnectionAdapterOptions
        {
            ServerCertificate = security.ServerCertificate,
            ServerCertificateChain = security.ServerChain,
            // Allow, not require: callers with a bearer token need no certificate.
            ClientCertificateMode = security.ClientCa is null ? ClientCertificateMode.NoCertificate : ClientCertificateMode.AllowCertificate,
        };
        if (security.ClientCa is { } clientCa)
        {
            var trust = new ClientCertificateTrust(clientCa, services.GetRequiredService<ILogger<ClientCertificateTrust>>());
            options.ClientCertificateValidation = trust.Validate;
        }

        return options;
    }
}

/// <summary>Ready when the local silo is an active cluster member.</summary>
internal sealed class SiloReadyHealthCheck(IClusterMembershipService membership, ILocalSiloDetails silo) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var status = membership.CurrentSnapshot.GetSiloStatus(silo.SiloAddress);
        return Task.FromResult(status == SiloStatus.Active
            ? HealthCheckResult.Healthy("silo active")
            : HealthCheckResult.Unhealthy($"silo is {status}"));
    }
}

/// <summary>Ready only while the hypervisor driver is connected (libvirtd restarted or hung: unhealthy until it reconnects).</summary>
internal sealed class HypervisorHealthCheck(IHypervisor hypervisor) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(hypervisor is IHypervisorHealth { Unreachable: { } why }
            ? HealthCheckResult.Unhealthy($"hypervisor unreachable: {why}")
            : HealthCheckResult.Healthy("hypervisor connected"));
}
