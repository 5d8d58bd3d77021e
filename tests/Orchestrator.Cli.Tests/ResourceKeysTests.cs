using Orchestrator.Cli.Infrastructure;

namespace Orchestrator.Cli.Tests;

public sealed class ResourceKeysTests
{
    [Fact]
    public void TryParseVmKey_TwoParts_ReturnsHostAndVm()
    {
        Assert.True(ResourceKeys.TryParseVmKey("kvm-01/web-1", out VmKey key, out string error));
        Assert.Equal(new VmKey("kvm-01", "web-1"), key);
        Assert.Equal("kvm-01/web-1", key.ToString());
        Assert.Empty(error);
    }

    [Theory]
    [InlineData("web-1")]
    [InlineData("kvm-01/web-1/vda")]
    [InlineData("kvm-01/")]
    [InlineData(" /web-1")]
    public void TryParseVmKey_NotTwoNonEmptyParts_FailsNamingTheArgument(string text)
    {
        Assert.False(ResourceKeys.TryParseVmKey(text, out _, out string error));
        Assert.Contains("HOST/VM", error, StringComparison.Ordinal);
        Assert.Contains($"'{text}'", error, StringComparison.Ordinal);
    }

    [Fact]
    public void TryParseDiskKey_ThreeParts_ReturnsHostVmAndDisk()
    {
        Assert.True(ResourceKeys.TryParseDiskKey("kvm-01/web-1/vda", out DiskKey key, out _));
        Assert.Equal(new DiskKey("kvm-01", "web-1", "vda"), key);
        Assert.Equal("kvm-01/web-1/vda", key.ToString());
    }

    [Theory]
    [InlineData("kvm-01/web-1")]
    [InlineData("kvm-01/web-1/vda/x")]
    [InlineData("/web-1/vda")]
    public void TryParseDiskKey_NotThreeNonEmptyParts_FailsNamingTheArgument(string text)
    {
        Assert.False(ResourceKeys.TryParseDiskKey(text, out _, out string error));
        Assert.Contains("HOST/VM/DISK", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("kvm-01", true)]
    [InlineData("kvm-01/web-1", false)]
    [InlineData(" ", false)]
    public void TryParseHostName_AcceptsOnlyNamesWithoutSlash(string text, bool valid)
    {
        Assert.Equal(valid, ResourceKeys.TryParseHostName(text, "--host", out _));
    }
}
