using Orchestrator.Api.V1;

namespace Orchestrator.Cli.Views;

/// <summary>
/// A followed run rebuilt from the watch stream's changes (<c>changes_only</c>): the server sends the run whole once
/// (<c>full</c>), then the header and only the targets that changed; this keeps every target by host and VM and
/// applies each message to it. A whole run from a server that ignores <c>changes_only</c> (older ones) applies the
/// same way: every target is updated.
/// </summary>
internal sealed class PolicyRunChanges
{
    private static readonly Comparer<(string Host, string Vm)> ByHostThenVm = Comparer<(string Host, string Vm)>.Create(
        (a, b) => string.CompareOrdinal(a.Host, b.Host) is var byHost and not 0 ? byHost : string.CompareOrdinal(a.Vm, b.Vm));

    private readonly SortedDictionary<(string Host, string Vm), PolicyTargetView> _targets = new(ByHostThenVm);

    /// <summary>Targets kept (for tests).</summary>
    public int Count => _targets.Count;

    /// <summary>The run as it stands after <paramref name="response"/>; null when the message holds no run.</summary>
    public PolicyRunView? Apply(WatchPolicyRunResponse response)
    {
        ArgumentNullException.ThrowIfNull(response);
        if (response.Run is not { } run)
        {
            return null;
        }

        if (response.Full)
        {
            _targets.Clear();
        }

        foreach (PolicyTarget target in run.Targets)
        {
            _targets[(target.Host, target.Vm)] = PolicyTargetView.From(target);
        }

        // The message's own copy holds only the changed targets: cloning it is O(changes).
        PolicyRun header = run.Clone();
        header.Targets.Clear();
        return PolicyRunView.From(header) with { Targets = [.. _targets.Values] };
    }
}
