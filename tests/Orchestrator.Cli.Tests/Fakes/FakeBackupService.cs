using Google.Rpc;
using Grpc.Core;
using Orchestrator.Api.V1;

namespace Orchestrator.Cli.Tests.Fakes;

/// <summary>
/// A BackupService with canned runs: <see cref="Samples.RunKey"/> goes admitted, copying, completed; the
/// same key with a "-fail" suffix goes copying, failed. Any other key is not found.
/// </summary>
internal sealed class FakeBackupService : BackupServiceBinding
{
    public const string FailingRunKey = Samples.RunKey + "-fail";

    public override Task<GetBackupResponse> GetBackup(GetBackupRequest request, ServerCallContext context) => request.Key switch
    {
        Samples.RunKey => Task.FromResult(new GetBackupResponse { Run = Samples.CompletedRun() }),
        _ => throw Samples.RichError(Code.NotFound, $"backup run {request.Key} not found"),
    };

    public override async Task WatchBackup(
        WatchBackupRequest request, IServerStreamWriter<WatchBackupResponse> responseStream, ServerCallContext context)
    {
        BackupRun[] runs = request.Key switch
        {
            Samples.RunKey => [Samples.CopyingRun().WithStep(BackupStep.Admitted), Samples.CopyingRun(), Samples.CompletedRun()],
            FailingRunKey => [Samples.CopyingRun(), Samples.FailedRun()],
            _ => throw Samples.RichError(Code.NotFound, $"backup run {request.Key} not found"),
        };
        foreach (BackupRun run in runs)
        {
            run.Key = request.Key;
            await responseStream.WriteAsync(new WatchBackupResponse { Run = run }, context.CancellationToken);
        }
    }
}
