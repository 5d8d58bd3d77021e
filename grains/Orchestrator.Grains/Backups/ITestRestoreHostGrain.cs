using MessagePack;
using Orchestrator.Grains.VirtualMachines;
using Orleans.Concurrency;

namespace Orchestrator.Grains.Backups;

/// <summary>
/// Test restores on one host (key: that host; placed on its silo): the throwaway VM's whole lifecycle (persisted
/// intent with every name, restore, define, boot, probe, destroy/undefine/delete, clean-up after a crash) runs here,
/// so a test restore runs on any host of the cluster. The VM grain keeps the results and asks this grain.
/// </summary>
[Alias("orchestrator.ITestRestoreHostGrain")]
public interface ITestRestoreHostGrain : IGrainWithStringKey
{
    /// <summary>What this host offers a throwaway VM of <paramref name="runKey"/>: the set under its roots, capacity, load.</summary>
    [AlwaysInterleave]
    [Alias("Offer")]
    Task<TestHostOffer> OfferAsync(string runKey, CancellationToken cancellationToken = default);

    /// <summary>Plans the restore here, persists every name it may create, then runs the test in the background.</summary>
    [Alias("Start")]
    Task<TestRestoreRecord> StartAsync(TestRestoreOrder order, CancellationToken cancellationToken = default);

    /// <summary>The test (running, or ended and not yet forgotten); null when this host never had it.</summary>
    [AlwaysInterleave]
    [Alias("Get")]
    Task<TestRestoreRecord?> GetAsync(string testId, CancellationToken cancellationToken = default);

    /// <summary>The VM grain recorded the end: the host drops the test (only once it is cleaned up).</summary>
    [AlwaysInterleave]
    [Alias("Forget")]
    Task ForgetAsync(string testId, CancellationToken cancellationToken = default);

    /// <summary>A test left by a VM grain that ran it itself (before tests ran here): this host cleans it up.</summary>
    [Alias("Adopt")]
    Task<TestRestoreRecord> AdoptAsync(string vmKey, TestRestoreRecord record, CancellationToken cancellationToken = default);
}

/// <summary>A test restore as the VM grain orders it on a host.</summary>
[GenerateSerializer]
[Alias("orchestrator.TestRestoreOrder")]
public sealed record TestRestoreOrder(
    [property: Id(0)] string VmKey,
    [property: Id(1)] string RunKey,
    [property: Id(2)] string TestId,
    [property: Id(3)] string Domain,
    [property: Id(4)] TestProbe Probe,
    [property: Id(5)] TimeSpan Timeout,
    [property: Id(6)] DateTimeOffset StartedAt,
    [property: Id(7)] string? Policy,
    [property: Id(8)] string? TraceId);

/// <summary>
/// One host's answer to "could a throwaway VM of this set run here now?": the numbers it decided on, and why not.
/// Memory: libvirt's free memory of the machine (virNodeGetFreeMemory) minus the throwaway's memory must leave the
/// reserve; CPU: vCPUs of the running domains plus the throwaway's must stay within CPUs x overcommit.
/// </summary>
[GenerateSerializer]
[Alias("orchestrator.TestHostOffer")]
public sealed record TestHostOffer(
    [property: Id(0)] string Host,
    [property: Id(1)] long FreeMemoryKiB,
    [property: Id(2)] long NeedMemoryKiB,
    [property: Id(3)] int Cpus,
    [property: Id(4)] int RunningVcpus,
    [property: Id(5)] int NeedVcpus,
    [property: Id(6)] int ActiveTests,
    [property: Id(7)] int MaxTests,
    [property: Id(8)] string? Refusal)
{
    public bool Qualifies => Refusal is null;
}

/// <summary>A host's test restores: running ones (with every name they may create) and ended ones not yet recorded by their VM.</summary>
[GenerateSerializer]
[Alias("orchestrator.TestRestoreHostState")]
[MessagePackObject]
public sealed record class TestRestoreHostState
{
    [Id(0)]
    [Key(0)]
    public List<HostTestRestore> Tests { get; set; } = [];
}

[GenerateSerializer]
[Alias("orchestrator.HostTestRestore")]
[MessagePackObject]
public sealed record class HostTestRestore
{
    /// <summary>The VM whose set is tested (host/vm): it records the result.</summary>
    [Id(0)]
    [Key(0)]
    public string VmKey { get; set; } = "";

    [Id(1)]
    [Key(1)]
    public TestRestoreRecord Record { get; set; } = new();
}
