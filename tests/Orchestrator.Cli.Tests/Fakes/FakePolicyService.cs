using Google.Rpc;
using Grpc.Core;
using Orchestrator.Api.V1;

namespace Orchestrator.Cli.Tests.Fakes;

/// <summary>
/// A PolicyService with canned answers: ApplyPolicy refuses a cron of "never" (naming schedule.cron, as the real
/// validator does) and creates anything else; WatchPolicyRun plays <see cref="PolicySamples.RunId"/> running, then
/// partial.
/// </summary>
internal sealed class FakePolicyService : PolicyServiceBinding
{
    public override Task<ApplyPolicyResponse> ApplyPolicy(ApplyPolicyRequest request, ServerCallContext context)
    {
        if (request.Spec.Schedule?.Cron == "never")
        {
            throw Samples.RichError(
                Code.InvalidArgument,
                "schedule.cron: 'never' is not a cron expression",
                Samples.BadField("schedule.cron", "schedule.cron: 'never' is not a cron expression"),
                new ErrorInfo { Reason = "INVALID_ARGUMENT", Domain = "orchestrator.dev" });
        }

        return Task.FromResult(new ApplyPolicyResponse
        {
            Policy = new Policy { Spec = request.Spec, Version = 1 },
            Created = true,
            Changed = true,
        });
    }

    public override async Task WatchPolicyRun(
        WatchPolicyRunRequest request, IServerStreamWriter<WatchPolicyRunResponse> responseStream, ServerCallContext context)
    {
        if (request.RunId != PolicySamples.RunId)
        {
            throw Samples.RichError(Code.NotFound, $"run {request.RunId} of policy {request.Name} not found");
        }

        foreach (PolicyRun run in new[] { PolicySamples.RunningRun(), PolicySamples.PartialRun() })
        {
            await responseStream.WriteAsync(new WatchPolicyRunResponse { Run = run }, context.CancellationToken);
        }
    }
}
