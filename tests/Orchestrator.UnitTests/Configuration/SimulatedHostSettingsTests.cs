using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging.Abstractions;
using Orchestrator.Hypervisor;
using Orchestrator.Silo.Configuration;
using Orchestrator.Silo.Hosting;

namespace Orchestrator.UnitTests.Configuration;

/// <summary>Orchestrator:Host:Simulated: a simulated host seeded with a fleet, its disk size and copy speed.</summary>
public sealed class SimulatedHostSettingsTests
{
    private static OrchestratorSettings Simulated(int vms) => new()
    {
        Host = new HostSettings { Name = "sim-01", Uri = "simulated://sim-01", Simulated = new SimulatedHostSettings { Vms = vms } },
    };

    [Fact]
    public void Validate_SeededSimulatedHost_HasNoErrors() =>
        Assert.Empty(OrchestratorSettingsValidator.Validate(Simulated(SimulatedHostSettings.MaxVms)));

    [Theory]
    [InlineData(-1)]
    [InlineData(SimulatedHostSettings.MaxVms + 1)]
    public void Validate_VmsOutOfRange_NamesTheSetting(int vms)
    {
        var error = Assert.Single(OrchestratorSettingsValidator.Validate(Simulated(vms)));
        Assert.StartsWith($"Orchestrator:Host:Simulated:Vms: {vms} is not between 0 and 100000", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_VmsOnALibvirtHost_Refused()
    {
        var s = Simulated(10);
        s.Host.Uri = "qemu:///system";
        var error = Assert.Single(OrchestratorSettingsValidator.Validate(s));
        Assert.StartsWith("Orchestrator:Host:Simulated:Vms seeds a simulated host only", error, StringComparison.Ordinal);
        Assert.Contains("qemu:///system", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_DiskSizeAndCopySpeedOutOfRange_NameEachSetting()
    {
        var s = Simulated(1);
        s.Host.Simulated.DiskSizeBytes = 4096;
        s.Host.Simulated.CopyBytesPerSecond = -1;
        var errors = OrchestratorSettingsValidator.Validate(s);
        Assert.Equal(2, errors.Count);
        Assert.Contains(errors, e => e.StartsWith("Orchestrator:Host:Simulated:DiskSizeBytes: 4096 is not between", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Orchestrator:Host:Simulated:CopyBytesPerSecond: -1 is negative", StringComparison.Ordinal));
    }

    [Fact]
    public void Bind_EnvironmentStyleKeys_FillTheSimulatedSection()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Orchestrator:Host:Simulated:Vms"] = "3334",
            ["Orchestrator:Host:Simulated:DiskSizeBytes"] = "67108864",
            ["Orchestrator:Host:Simulated:CopyBytesPerSecond"] = "0",
        }).Build();
        var settings = configuration.GetSection(OrchestratorSettings.Section).Get<OrchestratorSettings>()!;
        Assert.Equal(3334, settings.Host.Simulated.Vms);
        Assert.Equal(64L << 20, settings.Host.Simulated.DiskSizeBytes);
        Assert.Equal(0, settings.Host.Simulated.CopyBytesPerSecond);
        Assert.Equal(8L << 30, new SimulatedHostSettings().CopyBytesPerSecond);
    }

    [Fact]
    public async Task Connect_SeededSimulatedHost_ListsTheFleetWithLabelsChainsAndCopySpeed()
    {
        var host = new HostSettings
        {
            Name = "sim-07",
            Uri = "simulated://sim-07",
            Simulated = new SimulatedHostSettings { Vms = 25, DiskSizeBytes = 64L << 20, CopyBytesPerSecond = 123_456 },
        };
        await using var hypervisor = await HypervisorConnector.ConnectAsync(host, NullLoggerFactory.Instance);

        var domains = await hypervisor.ListDomainsAsync();
        Assert.Equal(25, domains.Count);
        Assert.Equal("vm-00001", domains[0].Name);
        Assert.Equal("vm-00025", domains[^1].Name);
        Assert.All(domains, d => Assert.Equal(DomainPowerState.Running, d.State));
        Assert.All(domains, d => Assert.Equal("scale", d.Labels["fleet"]));
        Assert.Equal("web", domains[0].Labels["tier"]);
        Assert.Equal("db", domains[1].Labels["tier"]);
        Assert.Equal(["vda", "vdb"], domains[0].Disks.Select(d => d.Target));
        Assert.All(domains[0].Disks, d => Assert.Equal("qcow2", d.Format));

        // vda is a linked clone of the template the host's VMs share (2 images), vdb stands alone.
        Assert.Equal(2, domains[0].Disks[0].ChainDepth);
        Assert.Equal(domains[0].Disks[0].BackingChain, domains[24].Disks[0].BackingChain);
        Assert.Equal(1, domains[0].Disks[1].ChainDepth);
        var vda = await hypervisor.Images.InfoAsync(domains[0].Disks[0].SourcePath, "qcow2");
        Assert.Equal(64L << 20, vda.VirtualSize);
        Assert.Equal(domains[0].Disks[0].BackingChain[0].Path, vda.BackingFile);
        Assert.Equal(123_456, ((Hypervisor.Simulated.SimulatedHypervisor)hypervisor).Options.CopyBytesPerSecond);
    }

    [Fact]
    public async Task Connect_NoSimulatedVms_SeedsNothing()
    {
        var host = new HostSettings { Name = "sim-08", Uri = "simulated://sim-08" };
        await using var hypervisor = await HypervisorConnector.ConnectAsync(host, NullLoggerFactory.Instance);
        Assert.Empty(await hypervisor.ListDomainsAsync());
    }
}
