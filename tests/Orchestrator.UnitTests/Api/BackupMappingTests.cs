using Orchestrator.Silo.Services;

namespace Orchestrator.UnitTests.Api;

/// <summary>What a backup run says on the wire about the policy that started it.</summary>
public sealed class BackupMappingTests
{
    private static BackupRunView Run(string? policy, int version, string? policyRun) => new(
        "kvm-01/web-1/b-20261126-020001-0a0b0c", "kvm-01", "web-1", BackupStep.Completed, false, null,
        new DateTimeOffset(2026, 11, 26, 2, 0, 1, TimeSpan.Zero), null, "/backups/kvm-01/web-1", [], [], "off", 0, null, 5,
        policy, version, policyRun);

    [Fact]
    public void ToProto_RunOfAPolicyRun_CarriesPolicyVersionAndRun()
    {
        var proto = BackupService.ToProto(Run("nightly-web", 3, "p-20261126-020000-abc123"));

        Assert.Equal(("nightly-web", 3, "p-20261126-020000-abc123"), (proto.Policy, proto.PolicyVersion, proto.PolicyRun));
    }

    [Fact]
    public void ToProto_RunStartedByHand_HasEmptyPolicyAndRun()
    {
        var proto = BackupService.ToProto(Run(null, 0, null));

        Assert.Equal(("", 0, ""), (proto.Policy, proto.PolicyVersion, proto.PolicyRun));
    }
}
