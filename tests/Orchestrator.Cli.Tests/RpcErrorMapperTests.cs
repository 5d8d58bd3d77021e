using System.Net.Http;
using System.Net.Sockets;
using Google.Rpc;
using Grpc.Core;
using Orchestrator.Cli.Errors;
using Orchestrator.Cli.Tests.Fakes;

namespace Orchestrator.Cli.Tests;

public sealed class RpcErrorMapperTests
{
    private static readonly Uri Endpoint = new("http://kvm-01:7070");
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    private static CliError Map(RpcException exception) => RpcErrorMapper.Map(exception, Endpoint, Timeout);

    [Theory]
    [InlineData(StatusCode.NotFound, ExitCodes.NotFound)]
    [InlineData(StatusCode.Unavailable, ExitCodes.Unavailable)]
    [InlineData(StatusCode.DeadlineExceeded, ExitCodes.Unavailable)]
    [InlineData(StatusCode.InvalidArgument, ExitCodes.InvalidArgument)]
    [InlineData(StatusCode.OutOfRange, ExitCodes.InvalidArgument)]
    [InlineData(StatusCode.FailedPrecondition, ExitCodes.FailedPrecondition)]
    [InlineData(StatusCode.AlreadyExists, ExitCodes.FailedPrecondition)]
    [InlineData(StatusCode.Aborted, ExitCodes.FailedPrecondition)]
    [InlineData(StatusCode.Internal, ExitCodes.Internal)]
    [InlineData(StatusCode.Unknown, ExitCodes.Internal)]
    [InlineData(StatusCode.Unimplemented, ExitCodes.Internal)]
    [InlineData(StatusCode.Unauthenticated, ExitCodes.Unauthenticated)]
    [InlineData(StatusCode.PermissionDenied, ExitCodes.PermissionDenied)]
    public void Map_PlainStatus_ExitCodeFollowsTheStatusCode(StatusCode code, int expected)
    {
        CliError error = Map(new RpcException(new Grpc.Core.Status(code, "something")));

        Assert.Equal(expected, error.ExitCode);
    }

    [Fact]
    public void Map_NotFound_UsesTheServerMessage()
    {
        CliError error = Map(Samples.RichError(Code.NotFound, "VM kvm-01/web-9 not found"));

        Assert.Equal(new CliError(ExitCodes.NotFound, "VM kvm-01/web-9 not found"), error with { Details = [] });
        Assert.Empty(error.Details);
    }

    [Fact]
    public void Map_InvalidArgumentWithBadRequest_ReportsEachOffendingField()
    {
        RpcException exception = Samples.RichError(
            Code.InvalidArgument,
            "invalid request",
            new BadRequest
            {
                FieldViolations =
                {
                    new BadRequest.Types.FieldViolation { Field = "key", Description = "must be host/vm" },
                    new BadRequest.Types.FieldViolation { Field = "host" },
                },
            });

        CliError error = Map(exception);

        Assert.Equal(ExitCodes.InvalidArgument, error.ExitCode);
        Assert.Equal("invalid request", error.Message);
        Assert.Equal(["field key: must be host/vm", "field host"], error.Details);
    }

    [Fact]
    public void Map_HostUnavailableReason_IsUnavailableWhateverTheStatusCode()
    {
        RpcException exception = Samples.RichError(
            Code.FailedPrecondition, "host kvm-02 is unavailable", Samples.HostUnavailable("kvm-02"));

        CliError error = Map(exception);

        Assert.Equal(ExitCodes.Unavailable, error.ExitCode);
        Assert.Equal("host kvm-02 is unavailable", error.Message);
        Assert.Equal(["reason: HOST_UNAVAILABLE (host=kvm-02)"], error.Details);
    }

    [Fact]
    public void Map_OtherReason_KeepsTheStatusCodesExitCode()
    {
        RpcException exception = Samples.RichError(
            Code.FailedPrecondition, "a backup is running", new ErrorInfo { Reason = "OPERATION_IN_PROGRESS" });

        CliError error = Map(exception);

        Assert.Equal(ExitCodes.FailedPrecondition, error.ExitCode);
        Assert.Equal(["reason: OPERATION_IN_PROGRESS"], error.Details);
    }

    [Fact]
    public void Map_TransportFailure_SaysTheEndpointCannotBeReached()
    {
        var transport = new HttpRequestException(
            "Connection refused (kvm-01:7070)", new SocketException((int)SocketError.ConnectionRefused));
        var exception = new RpcException(new Grpc.Core.Status(StatusCode.Unavailable, "Error starting gRPC call.", transport));

        CliError error = Map(exception);

        Assert.Equal(ExitCodes.Unavailable, error.ExitCode);
        Assert.StartsWith("cannot reach the orchestrator at http://kvm-01:7070: ", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Map_DeadlineExceeded_NamesTheTimeout()
    {
        CliError error = Map(new RpcException(new Grpc.Core.Status(StatusCode.DeadlineExceeded, "")));

        Assert.Equal(ExitCodes.Unavailable, error.ExitCode);
        Assert.Equal("no answer from http://kvm-01:7070 within 30 s (raise --timeout to wait longer)", error.Message);
    }

    [Fact]
    public void Map_InternalError_NamesTheGrpcStatus()
    {
        CliError error = Map(new RpcException(new Grpc.Core.Status(StatusCode.Internal, "boom")));

        Assert.Equal("boom (gRPC status Internal)", error.Message);
    }

    [Fact]
    public void Map_EmptyMessage_FallsBackToAGenericOne()
    {
        CliError error = Map(new RpcException(new Grpc.Core.Status(StatusCode.NotFound, "")));

        Assert.Equal("not found", error.Message);
    }

    [Fact]
    public void Map_MalformedDetailsTrailer_StillReportsTheStatus()
    {
        var trailers = new Metadata { { "grpc-status-details-bin", new byte[] { 0xff, 0xff, 0xff } } };
        var exception = new RpcException(new Grpc.Core.Status(StatusCode.NotFound, "gone"), trailers);

        CliError error = Map(exception);

        Assert.Equal(ExitCodes.NotFound, error.ExitCode);
        Assert.Equal("gone", error.Message);
    }

    [Fact]
    public void WriteTo_WritesErrorLineThenIndentedDetails()
    {
        var writer = new StringWriter();

        new CliError(ExitCodes.InvalidArgument, "invalid request", ["field key: must be host/vm"]).WriteTo(writer);

        Assert.Equal(
            "error: invalid request" + Environment.NewLine + "  field key: must be host/vm" + Environment.NewLine,
            writer.ToString());
    }
}
