using System.Text.RegularExpressions;
using Orleans.Concurrency;

namespace Orchestrator;

/// <summary>How a test restore decides that the restored guest works.</summary>
public enum TestProbeKind
{
    /// <summary>guest-ping through the QEMU guest agent answers.</summary>
    Agent = 0,

    /// <summary>The serial console shows a line matching a regular expression.</summary>
    Console = 1,

    /// <summary>A command run in the guest through the agent (<c>/bin/sh -c CMD</c>) exits 0.</summary>
    Command = 2,
}

/// <summary>A probe: <c>agent</c>, <c>console:REGEX</c> or <c>command:CMD</c> (the text form the CLI and policies use).</summary>
[GenerateSerializer]
[Alias("orchestrator.TestProbe")]
public sealed record TestProbe(
    [property: Id(0)] TestProbeKind Kind,
    [property: Id(1)] string Argument = "")
{
    public const int MaxArgumentLength = 1024;

    public static readonly TestProbe Agent = new(TestProbeKind.Agent);

    /// <summary>Parses the text form; an empty text is the agent probe. Throws InvalidArgument naming <paramref name="field"/>.</summary>
    public static TestProbe Parse(string? text, string field = "probe")
    {
        if (string.IsNullOrEmpty(text) || text == "agent")
        {
            return Agent;
        }

        var colon = text.IndexOf(':', StringComparison.Ordinal);
        var kind = colon < 0 ? text : text[..colon];
        var argument = colon < 0 ? "" : text[(colon + 1)..];
        var probe = kind switch
        {
            "console" => new TestProbe(TestProbeKind.Console, argument),
            "command" => new TestProbe(TestProbeKind.Command, argument),
            _ => throw OrchestratorException.InvalidArgument(field, $"{OrchestratorException.Quote(text)} is not a probe (agent, console:REGEX or command:CMD)"),
        };
        probe.Validate(field);
        return probe;
    }

    /// <summary>InvalidArgument naming <paramref name="field"/> when the argument does not fit the kind.</summary>
    public void Validate(string field = "probe")
    {
        switch (Kind)
        {
            case TestProbeKind.Agent when Argument.Length > 0:
                throw OrchestratorException.InvalidArgument(field, "the agent probe takes no argument");
            case TestProbeKind.Console or TestProbeKind.Command when Argument.Length == 0:
                throw OrchestratorException.InvalidArgument(field, $"{Name} needs {(Kind == TestProbeKind.Console ? "a regular expression (console:REGEX)" : "a command (command:CMD)")}");
            case TestProbeKind.Console or TestProbeKind.Command when Argument.Length > MaxArgumentLength:
                throw OrchestratorException.InvalidArgument(field, $"the {Name} probe's argument is {Argument.Length} characters; at most {MaxArgumentLength}");
            case TestProbeKind.Console or TestProbeKind.Command when Argument.Any(c => c == '\0' || (char.IsControl(c) && c != '\t')):
                throw OrchestratorException.InvalidArgument(field, $"the {Name} probe's argument holds a control character");
            case TestProbeKind.Console:
                try
                {
                    _ = new Regex(Argument, RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
                }
                catch (ArgumentException e)
                {
                    throw OrchestratorException.InvalidArgument(field, $"console:{Argument} is not a valid regular expression: {e.Message}");
                }

                break;
            case TestProbeKind.Agent or TestProbeKind.Console or TestProbeKind.Command:
                break;
            default:
                throw OrchestratorException.InvalidArgument(field, $"{(int)Kind} is not a probe kind");
        }
    }

    public string Name => Kind switch
    {
        TestProbeKind.Console => "console",
        TestProbeKind.Command => "command",
        _ => "agent",
    };

    public override string ToString() => Kind == TestProbeKind.Agent ? "agent" : $"{Name}:{Argument}";
}

/// <summary>A test restore of one backup set: restore into a throwaway VM without network, boot, probe, destroy.</summary>
[GenerateSerializer]
[Alias("orchestrator.TestRestoreRequest")]
public sealed record TestRestoreRequest(
    [property: Id(0)] string RunKey,
    [property: Id(1)] TestProbe Probe,
    [property: Id(2)] TimeSpan Timeout,
    [property: Id(3)] string? Host = null,
    [property: Id(4)] string? Policy = null)
{
    /// <summary>Names of test restores' throwaway VMs (orch-test-VM-RUN): reserved, never taken into inventory.</summary>
    public const string ThrowawayPrefix = "orch-test-";

    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromMinutes(5);
    public static readonly TimeSpan MinTimeout = TimeSpan.FromSeconds(5);
    public static readonly TimeSpan MaxTimeout = TimeSpan.FromHours(2);

    /// <summary>InvalidArgument naming the field for a probe or timeout out of bounds (server side: every caller).</summary>
    public void Validate()
    {
        ArgumentNullException.ThrowIfNull(Probe, nameof(Probe));
        Probe.Validate("probe");
        if (Timeout < MinTimeout || Timeout > MaxTimeout)
        {
            throw OrchestratorException.InvalidArgument("timeout", $"{Timeout.TotalSeconds:0.###} s is out of range ({MinTimeout.TotalSeconds:0} s to {MaxTimeout.TotalHours:0} h): it bounds restore, boot and probe together");
        }

        if (Host is { Length: > 0 })
        {
            GrainKeys.ValidateHost(Host, "host");
        }
    }
}

public enum TestRestoreOutcome
{
    Running = 0,
    Passed = 1,
    Failed = 2,
}

/// <summary>One test restore: where, what, how long each part took, and why it failed.</summary>
[GenerateSerializer]
[Alias("orchestrator.TestRestoreView")]
public sealed record TestRestoreView(
    [property: Id(0)] string Id,
    [property: Id(1)] string RunKey,
    [property: Id(2)] string Host,
    [property: Id(3)] string Domain,
    [property: Id(4)] string Probe,
    [property: Id(5)] TestRestoreOutcome Outcome,
    [property: Id(6)] DateTimeOffset StartedAt,
    [property: Id(7)] DateTimeOffset? EndedAt,
    [property: Id(8)] double RestoreSeconds,
    [property: Id(9)] double BootSeconds,
    [property: Id(10)] string Reason,
    [property: Id(11)] bool CleanedUp,
    [property: Id(12)] string? Policy = null)
{
    public bool IsTerminal => Outcome != TestRestoreOutcome.Running;
}

/// <summary>Test restores of one VM's backup sets (implemented by the VM grain).</summary>
[Alias("orchestrator.ITestRestoreOperations")]
public interface ITestRestoreOperations : IGrainWithStringKey
{
    /// <summary>Admits a test restore (its throwaway names persisted first) and runs it in the background.</summary>
    [Alias("StartTestRestore")]
    Task<TestRestoreView> StartTestRestoreAsync(TestRestoreRequest request, CancellationToken cancellationToken = default);

    /// <summary>The test with this id: the one running or a recorded one.</summary>
    [AlwaysInterleave]
    [Alias("GetTestRestore")]
    Task<TestRestoreView> GetTestRestoreAsync(string testId, CancellationToken cancellationToken = default);

    /// <summary>
    /// After a policy's backup of this VM completed: starts a test restore of <paramref name="runKey"/> when the
    /// policy's test_restore is due (every N completed runs, or a duration since the last test). Null when not due.
    /// </summary>
    [Alias("TestRestoreIfDue")]
    Task<TestRestoreView?> TestRestoreIfDueAsync(string runKey, TestRestoreSpec spec, string policy, CancellationToken cancellationToken = default);
}

/// <summary>A policy's <c>test_restore</c>: every N completed runs or every duration, the probe, an optional RTO.</summary>
[GenerateSerializer]
[Alias("orchestrator.TestRestoreSpec")]
public sealed record TestRestoreSpec(
    [property: Id(0)] int EveryRuns,
    [property: Id(1)] TimeSpan? Every,
    [property: Id(2)] TestProbe Probe,
    [property: Id(3)] TimeSpan? Rto = null,
    [property: Id(4)] TimeSpan? Timeout = null);
