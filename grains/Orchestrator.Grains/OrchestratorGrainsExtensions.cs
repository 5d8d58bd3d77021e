using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Orchestrator.Grains.Placement;

namespace Orchestrator.Grains;

public static class OrchestratorGrainsExtensions
{
    /// <summary>
    /// Host-affine placement and the services the grains need. The silo that serves <paramref name="host"/>
    /// announces it in its silo name (<see cref="HostSiloName"/>), which every silo reads from membership.
    /// </summary>
    public static ISiloBuilder AddOrchestratorGrains(this ISiloBuilder builder, string host)
    {
        GrainKeys.ValidateHost(host, "Orchestrator:Host:Name");
        // After every other configuration: the name is how the cluster learns the host (a test cluster names its silos too).
        builder.Services.PostConfigure<Orleans.Configuration.SiloOptions>(o => o.SiloName = HostSiloName.For(host));
        builder.Services.AddPlacementDirector<HostAffinePlacement, HostAffinePlacementDirector>();
        builder.Services.AddPlacementDirector<HostPreferredPlacement, HostPreferredPlacementDirector>();
        builder.Services.AddSingleton<IHostDirectory, HostDirectory>();
        builder.Services.AddSingleton<VirtualMachines.HostVmLocks>();
        builder.Services.AddSingleton(sp => new Backups.TestRestoreSlots(sp.GetRequiredService<Microsoft.Extensions.Options.IOptions<Backups.BackupOptions>>().Value.MaxConcurrentTestRestores));
        builder.Services.AddOptions<Backups.BackupOptions>();
        builder.Services.AddOptions<Policies.PolicyOptions>();
        builder.Services.AddOptions<Fleet.FleetIndexOptions>();
        builder.Services.TryAddSingleton(TimeProvider.System);
        builder.Services.AddSingleton(sp => new Backups.BackupSlots(
            host,
            sp.GetRequiredService<Microsoft.Extensions.Options.IOptions<Backups.BackupOptions>>(),
            sp.GetRequiredService<TimeProvider>()));
        builder.Services.TryAddSingleton(sp => new Checkpoints.CheckpointSchedulePlanner(sp.GetRequiredService<TimeProvider>()));
        return builder;
    }
}
