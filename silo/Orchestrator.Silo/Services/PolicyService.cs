using Grpc.Core;
using Orchestrator.Api.V1;

namespace Orchestrator.Silo.Services;

/// <summary>orchestrator.v1.PolicyService: fleet policies, served by their BackupPolicyGrains (key: policy name).</summary>
internal sealed class PolicyService(IGrainFactory grains) : Api.V1.PolicyService.PolicyServiceBase
{
    /// <summary>Runs listed when a request asks for no limit.</summary>
    public const int DefaultRunLimit = 20;

    /// <summary>Most runs one request lists (the CLI's --limit bound too).</summary>
    public const int MaxRunLimit = 1000;

    /// <summary>How long one wait of a watch lasts before it asks again (the stream stays open).</summary>
    private static readonly TimeSpan WatchPoll = TimeSpan.FromSeconds(15);

    public override async Task<ApplyPolicyResponse> ApplyPolicy(ApplyPolicyRequest request, ServerCallContext context)
    {
        var spec = PolicyMapper.ToContract(request.Spec);
        var result = await Policy(spec.Name).ApplyAsync(spec, context.CancellationToken);
        return new ApplyPolicyResponse { Policy = PolicyMapper.ToProto(result.Policy), Created = result.Created, Changed = result.Changed };
    }

    public override async Task<GetPolicyResponse> GetPolicy(GetPolicyRequest request, ServerCallContext context)
    {
        var view = await Policy(request.Name).GetAsync(context.CancellationToken);
        return new GetPolicyResponse { Policy = PolicyMapper.ToProto(view) };
    }

    public override async Task<ListPoliciesResponse> ListPolicies(ListPoliciesRequest request, ServerCallContext context)
    {
        var ct = context.CancellationToken;
        var registered = await grains.GetGrain<IFleetGrain>(GrainKeys.Fleet).ListPoliciesAsync(ct);
        var views = await Task.WhenAll(registered.Select(async r =>
        {
            try
            {
                return await grains.GetGrain<IBackupPolicyGrain>(r.Spec.Name).GetAsync(ct);
            }
            catch (OrchestratorException e) when (e.Code == ErrorCode.NotFound)
            {
                // Deleted between the registry's answer and this one.
                return null;
            }
        }));
        var response = new ListPoliciesResponse();
        response.Policies.AddRange(views.OfType<PolicyView>().OrderBy(v => v.Name, StringComparer.Ordinal).Select(PolicyMapper.ToProto));
        return response;
    }

    public override async Task<DeletePolicyResponse> DeletePolicy(DeletePolicyRequest request, ServerCallContext context) =>
        new() { Deleted = await Policy(request.Name).DeleteAsync(context.CancellationToken) };

    public override async Task<RunPolicyResponse> RunPolicy(RunPolicyRequest request, ServerCallContext context)
    {
        var run = await Policy(request.Name).RunNowAsync(context.CancellationToken);
        return new RunPolicyResponse { Run = PolicyMapper.ToProto(run) };
    }

    public override async Task<GetPolicyRunResponse> GetPolicyRun(GetPolicyRunRequest request, ServerCallContext context)
    {
        var policy = Policy(request.Name);
        var run = await policy.GetRunAsync(RunId(request.RunId), context.CancellationToken);
        return new GetPolicyRunResponse { Run = PolicyMapper.ToProto(run) };
    }

    public override async Task<ListPolicyRunsResponse> ListPolicyRuns(ListPolicyRunsRequest request, ServerCallContext context)
    {
        var policy = Policy(request.Name);
        if (request.Limit is < 0 or > MaxRunLimit)
        {
            throw OrchestratorException.InvalidArgument("limit", $"must be between 1 and {MaxRunLimit} (0: the default, {DefaultRunLimit}), not {request.Limit}");
        }

        var runs = await policy.ListRunsAsync(request.Limit == 0 ? DefaultRunLimit : request.Limit, context.CancellationToken);
        var response = new ListPolicyRunsResponse();
        response.Runs.AddRange(runs.Select(PolicyMapper.ToProto));
        return response;
    }

    public override async Task WatchPolicyRun(WatchPolicyRunRequest request, IServerStreamWriter<WatchPolicyRunResponse> responseStream, ServerCallContext context)
    {
        var ct = context.CancellationToken;
        var policy = Policy(request.Name);
        var runId = RunId(request.RunId);
        if (request.ChangesOnly)
        {
            await WatchChangesAsync(policy, runId, responseStream, ct);
            return;
        }

        var run = await policy.GetRunAsync(runId, ct);
        await responseStream.WriteAsync(new WatchPolicyRunResponse { Run = PolicyMapper.ToProto(run), Full = true, Counts = PolicyMapper.ToProto(PolicyRunCounts.Of(run.Targets.Select(t => t.Status))) }, ct);
        while (!run.IsTerminal && !ct.IsCancellationRequested)
        {
            var next = await policy.WaitRunAsync(runId, run.Version, WatchPoll, ct);
            if (next.Version != run.Version || next.IsTerminal)
            {
                await responseStream.WriteAsync(new WatchPolicyRunResponse { Run = PolicyMapper.ToProto(next), Full = true, Counts = PolicyMapper.ToProto(PolicyRunCounts.Of(next.Targets.Select(t => t.Status))) }, ct);
            }

            run = next;
        }
    }

    /// <summary>
    /// The run whole once, then its header and only the targets that changed: the cursor of what this stream sent
    /// stays here, so each message costs O(targets changed), not O(targets).
    /// </summary>
    private static async Task WatchChangesAsync(IBackupPolicyGrain policy, string runId, IServerStreamWriter<WatchPolicyRunResponse> responseStream, CancellationToken ct)
    {
        var changes = await policy.WaitRunChangesAsync(runId, since: null, TimeSpan.Zero, ct);
        await responseStream.WriteAsync(Response(changes), ct);
        var sent = changes;
        while (!changes.Run.IsTerminal && !ct.IsCancellationRequested)
        {
            changes = await policy.WaitRunChangesAsync(runId, changes.Cursor, WatchPoll, ct);

            // A part's version may move without a change a client sees: nothing is sent for that.
            if (changes.Full || changes.Run.Targets.Count > 0 || changes.Run.IsTerminal || changes.Run.State != sent.Run.State
                || changes.Cursor.Header != sent.Cursor.Header || changes.Counts != sent.Counts)
            {
                await responseStream.WriteAsync(Response(changes), ct);
                sent = changes;
            }
        }

        static WatchPolicyRunResponse Response(PolicyRunChanges c) =>
            new() { Run = PolicyMapper.ToProto(c.Run), Full = c.Full, Counts = PolicyMapper.ToProto(c.Counts) };
    }

    private IBackupPolicyGrain Policy(string name) => grains.GetGrain<IBackupPolicyGrain>(PolicyNames.Validate(name));

    /// <summary>A policy run id: p- then letters, digits and '-', at most 64 characters (p-yyyyMMdd-HHmmss-xxxxxx).</summary>
    private static string RunId(string runId)
    {
        if (string.IsNullOrWhiteSpace(runId))
        {
            throw OrchestratorException.InvalidArgument("run_id", "a run id is required");
        }

        if (!runId.StartsWith("p-", StringComparison.Ordinal) || runId.Length > 64 || !runId.All(c => char.IsAsciiLetterOrDigit(c) || c == '-'))
        {
            throw OrchestratorException.InvalidArgument("run_id", $"{OrchestratorException.Quote(runId)} is not a policy run id (p- then letters, digits and '-', at most 64 characters)");
        }

        return runId;
    }
}
