using Orchestrator.Silo.Services;
using V1 = Orchestrator.Api.V1;

namespace Orchestrator.UnitTests.Api;

public sealed class RequestShapeTests
{
    [Theory]
    [InlineData(".")]
    [InlineData("..")]
    [InlineData("a/b")]
    [InlineData("a\0b")]
    [InlineData("a\nb")]
    [InlineData(" web")]
    public void ValidateVmName_PathStepsSeparatorsAndControlCharacters_InvalidArgument(string name)
    {
        var e = Assert.Throws<OrchestratorException>(() => GrainKeys.ValidateVmName(name, "new_name"));
        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
        Assert.Equal("new_name", e.Field);
    }

    [Theory]
    [InlineData("web..1")]
    [InlineData("...")]
    [InlineData(".hidden")]
    public void ValidateVmName_DotsInsideAName_Accepted(string name) => GrainKeys.ValidateVmName(name);

    [Theory]
    [InlineData("kvm-01\n")]
    [InlineData("nightly\n")]
    public void Names_TrailingNewline_Refused(string name)
    {
        Assert.Throws<OrchestratorException>(() => GrainKeys.ValidateHost(name));
        Assert.Throws<OrchestratorException>(() => PolicyNames.Validate(name));
        Assert.Throws<OrchestratorException>(() => CheckpointNames.Validate(name));
    }

    [Fact]
    public void Quote_LongValue_PrefixAndByteCount()
    {
        var quoted = OrchestratorException.Quote(new string('é', 1000));

        Assert.Equal("'" + new string('é', OrchestratorException.QuotedPrefix) + "'…(2000 bytes)", quoted);
        Assert.Equal("'a\\u0000b\\u001b'", OrchestratorException.Quote("a\0b\u001b"));
    }

    [Fact]
    public void ParseVm_HugeKey_MessageQuotesAShortPrefix()
    {
        var e = Assert.Throws<OrchestratorException>(() => GrainKeys.ParseVm("demo-01/" + new string('x', 100_000)));

        Assert.Equal("key", e.Field);
        Assert.True(e.Message.Length < 200, e.Message);
    }

    [Fact]
    public void Check_ApplyPolicy_NamesFieldsAsThePolicyFileDoes()
    {
        var request = new V1.ApplyPolicyRequest { Spec = new V1.PolicySpec { Name = "p", Selector = new V1.PolicySelector { Vms = { "web-1", "bad\u0007" } } } };

        var e = Assert.Throws<OrchestratorException>(() => RequestShape.Check(request));

        Assert.Equal("selector.vms[1]", e.Field);
        Assert.DoesNotContain("bad", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Check_DescriptionWithLineBreaks_Accepted() =>
        RequestShape.Check(new V1.ApplyPolicyRequest { Spec = new V1.PolicySpec { Name = "p", Description = "line one\nline two\ttabbed" } });

    [Fact]
    public void Check_TooManyLabels_NamesTheMap()
    {
        var selector = new V1.PolicySelector();
        for (var i = 0; i <= RequestShape.MaxEntries; i++)
        {
            selector.Labels[$"k{i}"] = "v";
        }

        var e = Assert.Throws<OrchestratorException>(() => RequestShape.Check(new V1.ApplyPolicyRequest { Spec = new V1.PolicySpec { Selector = selector } }));

        Assert.Equal("selector.labels", e.Field);
    }

    [Fact]
    public void Cap_LongMessageWithControlCharacters_BoundedAndEscaped()
    {
        var capped = ErrorMapping.Cap("x\u0001" + new string('y', 10_000));

        Assert.True(capped.Length <= ErrorMapping.MaxMessage + 24, capped);
        Assert.StartsWith("x\\u0001y", capped, StringComparison.Ordinal);
        Assert.EndsWith("…(10002 characters)", capped, StringComparison.Ordinal);
    }
}
