using Google.Rpc;
using Grpc.Core;
using Orchestrator.Silo.Services;

namespace Orchestrator.UnitTests.Api;

public sealed class ErrorMappingTests
{
    [Fact]
    public void ToRpcException_ReasonGiven_ErrorInfoCarriesIt()
    {
        var e = OrchestratorException.FailedPrecondition("RAW_DISK", "internal checkpoints need qcow2; use a live backup, or convert the disk");

        var status = ErrorMapping.ToRpcException(e).GetRpcStatus()!;

        Assert.Equal((int)Code.FailedPrecondition, status.Code);
        Assert.Equal("RAW_DISK", status.GetDetail<ErrorInfo>().Reason);
        Assert.Null(status.GetDetail<BadRequest>());
    }

    [Fact]
    public void ToRpcException_NoReason_ErrorInfoUsesTheCodesReason()
    {
        var e = new OrchestratorException(ErrorCode.Conflict, "busy");

        var rpc = ErrorMapping.ToRpcException(e);

        Assert.Equal(StatusCode.Aborted, rpc.StatusCode);
        Assert.Equal("CONFLICT", rpc.GetRpcStatus()!.GetDetail<ErrorInfo>().Reason);
    }

    [Fact]
    public void ToRpcException_InvalidArgument_BadRequestNamesTheField()
    {
        var e = OrchestratorException.InvalidArgument("retention.keep_last", "must be 0 or more, not -1");

        var status = ErrorMapping.ToRpcException(e).GetRpcStatus()!;

        Assert.Equal("retention.keep_last", Assert.Single(status.GetDetail<BadRequest>().FieldViolations).Field);
        Assert.Equal("INVALID_ARGUMENT", status.GetDetail<ErrorInfo>().Reason);
    }
}
