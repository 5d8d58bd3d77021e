using Orchestrator.Hypervisor;
using Orchestrator.Silo.Configuration;
using Orchestrator.Silo.Hosting;
using Orchestrator.Silo.Persistence;

OrchestratorSettings? settings = null;
try
{
    var builder = WebApplication.CreateBuilder(args);
    settings = builder.AddOrchestratorSettings();
    StartupChecks.Run(settings);
    builder.AddOrchestratorSilo(settings);
    builder.AddOrchestratorEndpoints(settings);
    builder.AddOrchestratorTelemetry(settings.Host.Name, settings.Endpoints.MetricsEnabled);
    builder.AddSystemdIntegration();

    var app = builder.Build();
    app.MapOrchestratorEndpoints(settings);
    await app.Services.ApplyOrchestratorSchemaAsync(settings);
    app.Services.GetRequiredService<IHypervisor>(); // connect now: a wrong URI stops the start with a clear error
    await app.RunAsync();
    return 0;
}
catch (SettingsException e)
{
    // One line per problem, each naming its setting: no stack trace for a configuration the operator can fix.
    foreach (var error in e.Errors)
    {
        await Console.Error.WriteLineAsync($"orchestrator-silo: {error.ReplaceLineEndings(" ")}");
    }

    return 2;
}
catch (Exception e) when (StartupChecks.Describe(e, settings) is { } line)
{
    await Console.Error.WriteLineAsync($"orchestrator-silo: {line.ReplaceLineEndings(" ")}");
    return 2;
}
