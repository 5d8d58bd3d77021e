using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Libvirt;
using Orchestrator.Hypervisor.QemuImg;
using Orchestrator.Hypervisor.Simulated;
using Orchestrator.Silo.Configuration;

namespace Orchestrator.Silo.Hosting;

/// <summary>Opens the hypervisor a silo serves: the simulated one for simulated:// URIs, libvirt otherwise.</summary>
internal static class HypervisorConnector
{
    public const string SimulatedScheme = "simulated";

    public static async Task<IHypervisor> ConnectAsync(HostSettings host, ILoggerFactory loggers, CancellationToken cancellationToken = default)
    {
        var uri = new Uri(host.Uri);
        if (uri.Scheme == SimulatedScheme)
        {
            var options = new SimulatedOptions { HostName = host.Name, CopyBytesPerSecond = host.Simulated.CopyBytesPerSecond };
            if (host.Simulated.ImageFiles is { Length: > 0 } files)
            {
                options.ImageDirectory = files;
                options.WriteImageFiles = true;
            }

            var simulated = new SimulatedHypervisor(options);
            if (host.SeedDemo)
            {
                simulated.SeedDemo();
            }

            return simulated.SeedFleet(host.Simulated.Vms, host.Simulated.DiskSizeBytes);
        }

        try
        {
            var images = new QemuImgDiskImages(loggers.CreateLogger<QemuImgDiskImages>());
            var libvirt = await LibvirtHypervisor.ConnectAsync(host.Uri, loggers.CreateLogger<LibvirtHypervisor>(), images, cancellationToken, host.CallTimeout);
            libvirt.CallTimeout = host.CallTimeout;
            return libvirt;
        }
        catch (HypervisorException e)
        {
            throw new SettingsException([$"{OrchestratorSettings.Section}:Host:Uri: cannot connect to '{host.Uri}': {e.Message}"]);
        }
    }
}
