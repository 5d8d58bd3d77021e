using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Orchestrator.Grains;
using Orchestrator.Grains.Backups;
using Orchestrator.Hypervisor;
using Orchestrator.Silo.Configuration;
using Orchestrator.Silo.Persistence;
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
        var errors = OrchestratorSettingsValidator.Validate(settings)
            .Concat(OrchestratorSettingsValidator.Validate(backup))
            .Concat(OrchestratorSettingsValidator.Validate(policies))
            .ToList();
        if (errors.Count > 0)
        {
            throw new SettingsException(errors);
        }

        builder.Services.AddSingleton(Microsoft.Extensions.Options.Options.Create(settings));
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
            if (settings.Endpoints.Dashboard)
            {
                silo.AddDashboard();
            }
        });
        builder.Services.AddHostedService<HostAgent>();
        builder.Services.Configure<BackupOptions>(builder.Configuration.GetSection($"{OrchestratorSettings.Section}:Backup"));
        builder.Services.Configure<Grains.Policies.PolicyOptions>(builder.Configuration.GetSection($"{OrchestratorSettings.Section}:Policies"));
        return builder;
    }

    /// <summary>Kestrel: gRPC (h2c) on its own port; health and the dashboard on an HTTP/1.1 port.</summary>
    public static WebApplicationBuilder AddOrchestratorEndpoints(this WebApplicationBuilder builder, OrchestratorSettings settings)
    {
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            var address = settings.Endpoints.ParsedBindAddress;
            kestrel.Listen(address, settings.Endpoints.GrpcPort, o => o.Protocols = HttpProtocols.Http2);
            kestrel.Listen(address, settings.Endpoints.HttpPort, o => o.Protocols = HttpProtocols.Http1);
        });
        builder.Services.AddGrpc(o => o.Interceptors.Add<ErrorInterceptor>());
        builder.Services.AddGrpcReflection();
        builder.Services.AddHealthChecks()
            .AddCheck<SiloReadyHealthCheck>("silo", tags: ["ready"]);
        return builder;
    }

    public static WebApplication MapOrchestratorEndpoints(this WebApplication app, OrchestratorSettings settings)
    {
        var grpcPort = $"*:{settings.Endpoints.GrpcPort}";
        var httpPort = $"*:{settings.Endpoints.HttpPort}";
        app.MapGrpcService<FleetService>().RequireHost(grpcPort);
        app.MapGrpcService<CheckpointService>().RequireHost(grpcPort);
        app.MapGrpcService<BackupService>().RequireHost(grpcPort);
        app.MapGrpcService<PolicyService>().RequireHost(grpcPort);
        app.MapGrpcReflectionService().RequireHost(grpcPort);
        app.MapHealthChecks("/health/live", new HealthCheckOptions { Predicate = _ => false }).RequireHost(httpPort);
        app.MapHealthChecks("/health/ready", new HealthCheckOptions { Predicate = c => c.Tags.Contains("ready") }).RequireHost(httpPort);
        if (settings.Endpoints.Dashboard)
        {
            app.MapOrleansDashboard("/dashboard");
        }

        return app;
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
