using Microsoft.Extensions.Configuration;
using Orchestrator.Silo.Configuration;

namespace Orchestrator.UnitTests.Configuration;

public sealed class EndpointExposureTests
{
    [Theory]
    [InlineData("127.0.0.1", null, true)]
    [InlineData("::1", null, true)]
    [InlineData("0.0.0.0", null, false)]
    [InlineData("10.0.0.12", null, false)]
    [InlineData("0.0.0.0", true, true)]
    [InlineData("127.0.0.1", false, false)]
    public void DashboardEnabled_Default_OnlyOnLoopback(string bindAddress, bool? setting, bool expected) =>
        Assert.Equal(expected, new EndpointSettings { BindAddress = bindAddress, Dashboard = setting }.DashboardEnabled);

    [Theory]
    [InlineData("30000", true)]
    [InlineData("0", false)]
    [InlineData(null, false)]
    public void ValidateRemoved_GatewayPort_RefusedUnlessZero(string? value, bool refused)
    {
        var values = new Dictionary<string, string?>();
        if (value is not null)
        {
            values["Orchestrator:Cluster:GatewayPort"] = value;
        }

        var errors = OrchestratorSettingsValidator.ValidateRemoved(new ConfigurationBuilder().AddInMemoryCollection(values).Build());

        Assert.Equal(refused, errors.Count == 1);
        Assert.All(errors, e => Assert.StartsWith("Orchestrator:Cluster:GatewayPort is not supported", e, StringComparison.Ordinal));
    }

    [Theory]
    [InlineData(1024, 64 * 1024 * 1024, "Orchestrator:Endpoints:MaxRequestBytes")]
    [InlineData(1024 * 1024, 1024, "Orchestrator:Endpoints:MaxResponseBytes")]
    public void Validate_MessageLimitsOutOfRange_NameTheSetting(int request, int response, string setting)
    {
        var settings = new OrchestratorSettings { Host = new HostSettings { Name = "kvm-01", Uri = "qemu:///system" } };
        settings.Endpoints.MaxRequestBytes = request;
        settings.Endpoints.MaxResponseBytes = response;

        Assert.StartsWith(setting, Assert.Single(OrchestratorSettingsValidator.Validate(settings)), StringComparison.Ordinal);
    }
}
