using System.Collections.Immutable;
using System.Net;
using Orchestrator.Grains.Placement;

namespace Orchestrator.UnitTests.Cluster;

/// <summary>
/// The host directory reads the host from the membership entry itself: a silo is served the moment membership
/// lists it active, with no second fetch that could fail and be remembered as failed.
/// </summary>
public sealed class HostDirectoryTests
{
    [Fact]
    public void ActiveSilosNamedForAHost_ServeIt_OthersServeNothing()
    {
        var a = Silo(11111, 1);
        var b = Silo(11112, 1);
        var joining = Silo(11113, 1);
        var plain = Silo(11114, 1);
        var directory = new HostDirectory(new Membership(
            Member(a, SiloStatus.Active, HostSiloName.For("kvm-a")),
            Member(b, SiloStatus.Active, HostSiloName.For("kvm-b")),
            Member(joining, SiloStatus.Joining, HostSiloName.For("kvm-c")),
            Member(plain, SiloStatus.Active, "Silo_4")));

        Assert.Equal(a, directory.FindSilo("kvm-a"));
        Assert.Equal(b, directory.FindSilo("kvm-b"));
        Assert.Null(directory.FindSilo("kvm-c"));
        Assert.Null(directory.FindSilo("Silo_4"));
        Assert.Null(directory.FindSilo("kvm-a", [b, plain]));
        Assert.Equal(["kvm-a", "kvm-b"], directory.ServedHosts().Keys.Order(StringComparer.Ordinal));
    }

    [Fact]
    public void HostWhoseSiloRestarted_TheNewestGenerationServesIt()
    {
        var old = Silo(11111, 1);
        var restarted = Silo(11111, 2);
        var directory = new HostDirectory(new Membership(
            Member(restarted, SiloStatus.Active, HostSiloName.For("kvm-a")),
            Member(old, SiloStatus.Active, HostSiloName.For("kvm-a"))));

        Assert.Equal(restarted, directory.FindSilo("kvm-a"));
    }

    [Theory]
    [InlineData("orchestrator-host:kvm-01", "kvm-01")]
    [InlineData("orchestrator-host:", null)]
    [InlineData("kvm-01", null)]
    [InlineData(null, null)]
    public void HostOf_ReadsOnlyNamesThisProductGave(string? name, string? host) =>
        Assert.Equal(host, HostSiloName.HostOf(name));

    private static SiloAddress Silo(int port, int generation) => SiloAddress.New(new IPEndPoint(IPAddress.Loopback, port), generation);

    private static ClusterMember Member(SiloAddress silo, SiloStatus status, string name) => new(silo, status, name);

    private sealed class Membership(params ClusterMember[] members) : IClusterMembershipService
    {
        public ClusterMembershipSnapshot CurrentSnapshot { get; } =
            new(members.ToImmutableDictionary(m => m.SiloAddress), new MembershipVersion(1));

        public IAsyncEnumerable<ClusterMembershipSnapshot> MembershipUpdates => throw new NotSupportedException();

        public ValueTask Refresh(MembershipVersion minimumVersion = default, CancellationToken cancellationToken = default) => ValueTask.CompletedTask;

        public Task<bool> TryKill(SiloAddress siloAddress) => Task.FromResult(false);
    }
}
