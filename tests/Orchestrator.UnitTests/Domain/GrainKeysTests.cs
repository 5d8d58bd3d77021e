namespace Orchestrator.UnitTests.Domain;

public sealed class GrainKeysTests
{
    [Fact]
    public void ParseVm_WellFormedKey_ReturnsHostAndVm()
    {
        var (host, vm) = GrainKeys.ParseVm("kvm-01/web-1");
        Assert.Equal("kvm-01", host);
        Assert.Equal("web-1", vm);
    }

    [Theory]
    [InlineData("", "a key of the form HOST/VM is required")]
    [InlineData("kvm-01", "is not of the form HOST/VM")]
    [InlineData("kvm-01/", "is not of the form HOST/VM")]
    [InlineData("/web-1", "is not of the form HOST/VM")]
    [InlineData("kvm-01/web-1/vda", "is not of the form HOST/VM")]
    [InlineData("kvm 01/web-1", "is not a valid host name")]
    [InlineData("kvm-01/ web-1", "is not a valid VM name")]
    public void ParseVm_MalformedKey_ThrowsInvalidArgumentNamingTheField(string key, string reason)
    {
        var e = Assert.Throws<OrchestratorException>(() => GrainKeys.ParseVm(key, "key"));
        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
        Assert.Equal("key", e.Field);
        Assert.Contains(reason, e.Message, StringComparison.Ordinal);
        Assert.StartsWith("key: ", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ParseDisk_WellFormedKey_ReturnsAllThree()
    {
        Assert.Equal(("kvm-01", "db-1", "vdb"), GrainKeys.ParseDisk("kvm-01/db-1/vdb"));
    }

    [Theory]
    [InlineData("kvm-01/db-1")]
    [InlineData("kvm-01/db-1/VDA")]
    [InlineData("kvm-01/db-1/vda/x")]
    [InlineData("kvm-01/db-1/../etc")]
    public void ParseDisk_MalformedKey_Throws(string key)
    {
        var e = Assert.Throws<OrchestratorException>(() => GrainKeys.ParseDisk(key));
        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
    }

    [Theory]
    [InlineData("kvm-01/web-1/vda", "kvm-01")]
    [InlineData("kvm-01/web-1", "kvm-01")]
    [InlineData("kvm-01", "kvm-01")]
    public void HostOf_AnyHostAffineKey_ReturnsFirstSegment(string key, string host) =>
        Assert.Equal(host, GrainKeys.HostOf(key));
}
