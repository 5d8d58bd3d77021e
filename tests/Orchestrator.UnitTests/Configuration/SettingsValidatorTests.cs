using Orchestrator.Silo.Configuration;

namespace Orchestrator.UnitTests.Configuration;

public sealed class SettingsValidatorTests
{
    private static OrchestratorSettings Valid() => new()
    {
        Host = new HostSettings { Name = "kvm-01", Uri = "qemu:///system" },
    };

    [Fact]
    public void Validate_DefaultsWithHost_HasNoErrors() => Assert.Empty(OrchestratorSettingsValidator.Validate(Valid()));

    [Fact]
    public void Validate_MissingHostName_NamesTheSetting()
    {
        var s = Valid();
        s.Host.Name = "";
        var error = Assert.Single(OrchestratorSettingsValidator.Validate(s));
        Assert.StartsWith("Orchestrator:Host:Name is required", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_ClusterModeWithoutConnectionString_NamesTheSetting()
    {
        var s = Valid();
        s.Persistence.Mode = PersistenceMode.Cluster;
        var error = Assert.Single(OrchestratorSettingsValidator.Validate(s));
        Assert.StartsWith("Orchestrator:Persistence:PostgresConnectionString is required", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_SeveralProblems_ReportsEach()
    {
        var s = Valid();
        s.Host.Uri = "not a uri";
        s.Endpoints.GrpcPort = 70000;
        s.Endpoints.BindAddress = "localhost:80";
        var errors = OrchestratorSettingsValidator.Validate(s);
        Assert.Contains(errors, e => e.StartsWith("Orchestrator:Host:Uri:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Orchestrator:Endpoints:GrpcPort:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Orchestrator:Endpoints:BindAddress:", StringComparison.Ordinal));
        Assert.Equal(3, errors.Count);
    }

    [Fact]
    public void Validate_SameGrpcAndHttpPort_Refused()
    {
        var s = Valid();
        s.Endpoints.HttpPort = s.Endpoints.GrpcPort;
        Assert.Contains(OrchestratorSettingsValidator.Validate(s), e => e.Contains("must differ", StringComparison.Ordinal));
    }

    [Fact]
    public void ValidatePolicies_Defaults_HaveNoErrors() => Assert.Empty(OrchestratorSettingsValidator.Validate(new Grains.Policies.PolicyOptions()));

    [Fact]
    public void ValidatePolicies_ZeroRetryIntervalAndHistory_NameTheSettings()
    {
        var errors = OrchestratorSettingsValidator.Validate(new Grains.Policies.PolicyOptions { RetryInterval = TimeSpan.Zero, RunHistoryLimit = 0 });

        Assert.Equal(2, errors.Count);
        Assert.Contains(errors, e => e.StartsWith("Orchestrator:Policies:RetryInterval", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Orchestrator:Policies:RunHistoryLimit", StringComparison.Ordinal));
    }

    [Fact]
    public void ValidatePolicies_ComplianceMetricsIntervalTooShort_NamesTheSetting()
    {
        var error = Assert.Single(OrchestratorSettingsValidator.Validate(new Grains.Policies.PolicyOptions { ComplianceMetricsInterval = TimeSpan.FromMilliseconds(10) }));

        Assert.StartsWith("Orchestrator:Policies:ComplianceMetricsInterval", error, StringComparison.Ordinal);
    }
}
