using Orchestrator.Hypervisor;
using Orchestrator.Silo.Configuration;
using Orchestrator.Silo.Hosting;
using Orchestrator.Silo.Persistence;

try
{
    var builder = WebApplication.CreateBuilder(args);
    var settings = builder.AddOrchestratorSettings();
    builder.AddOrchestratorSilo(settings);
    builder.AddOrchestratorEndpoints(settings);
    builder.AddOrchestratorTelemetry(settings.Host.Name);

    var app = builder.Build();
    app.MapOrchestratorEndpoints(settings);
    await app.Services.ApplyOrchestratorSchemaAsync(settings);
    app.Services.GetRequiredService<IHypervisor>(); // connect now: a wrong URI stops the start with a clear error
    await app.RunAsync();
    return 0;
}
catch (SettingsException e)
{
    await Console.Error.WriteLineAsync($"orchestrator-silo: {e.Message}");
    return 2;
}
