using System.Collections;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using Google.Protobuf.WellKnownTypes;
using Google.Rpc;
using Grpc.Core;
using Grpc.Net.Client;
using Orchestrator.Api.V1;
using Orchestrator.IntegrationTests.Infrastructure;

namespace Orchestrator.IntegrationTests.Security;

/// <summary>
/// One embedded silo process (simulated demo host, a backup root) and ONE gRPC channel, shared by every hostile case:
/// a case that broke the channel would make every later case fail.
/// </summary>
public sealed class HostileSiloFixture : IAsyncLifetime
{
    public HostileSiloFixture()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"orchestrator-hostile-{Guid.NewGuid():N}");
        BackupRoot = Path.Combine(dir, "backups");
        Silo = new SiloProcess("demo-01", dir, new Dictionary<string, string>
        {
            ["Orchestrator__Backup__Roots__0"] = BackupRoot,
            ["Orchestrator__Backup__DefaultTarget"] = Path.Combine(BackupRoot, "demo-01"),

            // The error interceptor logs every refused call: the log must not echo the input either.
            ["Logging__LogLevel__Orchestrator"] = "Information",
        });
        Channel = GrpcChannel.ForAddress(Silo.GrpcEndpoint);
    }

    public SiloProcess Silo { get; }

    public string BackupRoot { get; }

    public GrpcChannel Channel { get; }

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(BackupRoot);
        Silo.Start();
        await Silo.WaitReadyAsync();
        await GrpcClients.Fleet(Silo.GrpcEndpoint).WaitForVmAsync("demo-01/web-1");
    }

    public async Task DisposeAsync()
    {
        Channel.Dispose();
        await Silo.DisposeAsync();
        Directory.Delete(Silo.WorkDir, recursive: true);
    }
}

/// <summary>
/// Every request message of every service, driven by the proto descriptors: each field of each request is set, one at
/// a time in an otherwise valid request, to empty (when the field is required), huge (100 KB), control characters, a
/// path that climbs or is absolute, "." and ".." as a VM name, out-of-range numbers, enums and durations, and too many
/// entries. Each gets INVALID_ARGUMENT with a BadRequest violation naming the field and a short message quoting at most a
/// short prefix, and the same channel answers a normal call at once afterwards. A new RPC without a valid baseline
/// request, or a field of a type with no hostile values, fails <see cref="Descriptors_EveryRpcAndField_HasHostileCases"/>.
/// </summary>
public sealed class HostileInputTests(HostileSiloFixture fixture) : IClassFixture<HostileSiloFixture>
{
    /// <summary>Longest status message accepted: the server's cap (400) plus its "…(N characters)" suffix.</summary>
    private const int MaxMessage = 430;

    private const int Huge = 100_000;

    private static readonly ServiceDescriptor[] Services =
        [FleetService.Descriptor, CheckpointService.Descriptor, BackupService.Descriptor, PolicyService.Descriptor];

    /// <summary>RPCs whose request has no field at all: nothing a caller sends can be hostile.</summary>
    private static readonly HashSet<string> NoFields = new(StringComparer.Ordinal) { "ListHosts", "ListPolicies" };

    /// <summary>String fields where empty means "none" or "the default" (every other string field is required).</summary>
    private static readonly HashSet<string> Optional = new(StringComparer.Ordinal)
    {
        "ListVms.host", "GetCompliance.host", "GetCompliance.policy", "ListOverlays.host", "CreateCheckpoint.name",
        "ListCheckpointSchedules.host", "StartBackup.target", "ListBackups.vm", "ListBackups.host",
        "ApplyPolicy.spec.description", "ApplyPolicy.spec.target", "ApplyPolicy.spec.schedule.time_zone",
        "SetCheckpointSchedule.schedule.time_zone", "TestBackup.host", "TestBackup.probe", "ApplyPolicy.spec.test_restore.probe", "Restore.host", "VerifyBackup.host",
        "ApplyPolicy.spec.level",
    };

    /// <summary>Free text: a path in it is just text (line breaks allowed in a description).</summary>
    private static readonly HashSet<string> FreeText = new(StringComparer.Ordinal) { "ApplyPolicy.spec.description" };

    /// <summary>Enums whose unspecified value (0) is refused.</summary>
    private static readonly HashSet<string> RequiredEnums = new(StringComparer.Ordinal) { "ApplyPolicy.spec.kind" };

    /// <summary>Fields the server names by another name than the proto path (the policy file's name).</summary>
    private static readonly Dictionary<string, string> FieldNames = new(StringComparer.Ordinal)
    {
        ["ApplyPolicy.spec.bandwidth_bytes_per_second"] = "bandwidth",
        ["ApplyPolicy.spec.test_restore.every_runs"] = "test_restore.every",
        ["ApplyPolicy.spec.full_every_runs"] = "full_every",
    };

    private const string Vm = "demo-01/web-1";
    private const string RunKey = "demo-01/web-1/b-20260101-000000-abcdef";
    private const string PolicyRunId = "p-20260101-000000-abcdef";

    /// <summary>A valid request per RPC: only the field under test is made hostile.</summary>
    private static IMessage Baseline(string method, string backupRoot) => method switch
    {
        "ListVms" => new ListVmsRequest { Host = "demo-01" },
        "GetVm" => new GetVmRequest { Key = Vm },
        "GetDiskChain" => new GetDiskChainRequest { Key = Vm + "/vda" },
        "GetCompliance" => new GetComplianceRequest { Host = "demo-01", Policy = "nightly", Status = ComplianceStatus.Ok },
        "ListOverlays" => new ListOverlaysRequest { Host = "demo-01" },
        "CreateCheckpoint" => new CreateCheckpointRequest { Key = Vm, Name = "cp-1" },
        "ListCheckpoints" => new ListCheckpointsRequest { Key = Vm },
        "RevertCheckpoint" => new RevertCheckpointRequest { Key = Vm, Name = "cp-1", Target = RevertTarget.Running },
        "DeleteCheckpoint" => new DeleteCheckpointRequest { Key = Vm, Name = "cp-1" },
        "SetCheckpointSchedule" => new SetCheckpointScheduleRequest
        {
            Key = Vm,
            Schedule = new CheckpointSchedule { Cron = "0 * * * *", TimeZone = "UTC", Jitter = Duration.FromTimeSpan(TimeSpan.FromMinutes(1)) },
            Retention = new RetentionPolicy { KeepLast = 3, Hourly = 1, Daily = 1, Weekly = 1, Monthly = 1 },
        },
        "GetCheckpointSchedule" => new GetCheckpointScheduleRequest { Key = Vm },
        "ListCheckpointSchedules" => new ListCheckpointSchedulesRequest { Host = "demo-01" },
        "DeleteCheckpointSchedule" => new DeleteCheckpointScheduleRequest { Key = Vm },
        "StartBackup" => new StartBackupRequest
        {
            Vm = Vm,
            Target = Path.Combine(backupRoot, "hostile"),
            Quiesce = QuiesceMode.Off,
            BandwidthBytesPerSecond = 1 << 20,
            Retention = new Retention { KeepLast = 1, KeepDaily = 1, KeepWeekly = 1, KeepMonthly = 1 },
        },
        "GetBackup" => new GetBackupRequest { Key = RunKey },
        "ListBackups" => new ListBackupsRequest { Vm = Vm },
        "WatchBackup" => new WatchBackupRequest { Key = RunKey },
        "Restore" => new RestoreRequest { Key = RunKey, NewName = "web-1-restored" },
        "RepairOverlays" => new RepairOverlaysRequest { Vm = Vm, DryRun = true },
        "TestBackup" => new TestBackupRequest { Key = RunKey, Probe = "agent", Timeout = Duration.FromTimeSpan(TimeSpan.FromMinutes(1)), NoWait = true },
        "VerifyBackup" => new VerifyBackupRequest { Key = RunKey },
        "ApplyPolicy" => new ApplyPolicyRequest
        {
            Spec = new PolicySpec
            {
                Name = "nightly",
                Kind = PolicyKind.LiveBackup,
                Description = "hostile-input baseline",
                Selector = new PolicySelector { Hosts = { "demo-*" }, Vms = { "web-*" }, Labels = { ["tier"] = "web" } },
                Schedule = new PolicySchedule { Cron = "0 2 * * *", TimeZone = "UTC" },
                Retention = new PolicyRetention { KeepLast = 3, Daily = 1, Weekly = 1, Monthly = 1 },
                Target = backupRoot + "/{host}/{vm}",
                Quiesce = QuiesceMode.Off,
                BandwidthBytesPerSecond = 1 << 20,
                Concurrency = new PolicyConcurrency { PerHost = 1, Fleet = 2 },
                Rpo = Duration.FromTimeSpan(TimeSpan.FromDays(1)),
                TestRestore = new PolicyTestRestore
                {
                    EveryRuns = 3,
                    Probe = "agent",
                    Rto = Duration.FromTimeSpan(TimeSpan.FromMinutes(5)),
                    Timeout = Duration.FromTimeSpan(TimeSpan.FromMinutes(10)),
                },
                Level = "auto",
                FullEveryRuns = 7,
            },
        },
        "GetPolicy" => new GetPolicyRequest { Name = "nightly" },
        "DeletePolicy" => new DeletePolicyRequest { Name = "nightly" },
        "RunPolicy" => new RunPolicyRequest { Name = "nightly" },
        "GetPolicyRun" => new GetPolicyRunRequest { Name = "nightly", RunId = PolicyRunId },
        "ListPolicyRuns" => new ListPolicyRunsRequest { Name = "nightly", Limit = 5 },
        "WatchPolicyRun" => new WatchPolicyRunRequest { Name = "nightly", RunId = PolicyRunId },
        _ => throw new KeyNotFoundException($"no valid baseline request for {method}: add one to {nameof(HostileInputTests)}.{nameof(Baseline)}"),
    };

    /// <summary>One hostile request: which RPC, what is changed, and the field the server must name.</summary>
    public sealed record HostileCase(string Id, MethodDescriptor Method, string Path, Action<IMessage> Mutate, string ExpectedField);

    private static readonly Lazy<IReadOnlyDictionary<string, HostileCase>> AllCases = new(() =>
        Services.SelectMany(s => s.Methods).SelectMany(CasesOf).ToDictionary(c => c.Id, StringComparer.Ordinal));

    public static TheoryData<string> CaseIds()
    {
        var data = new TheoryData<string>();
        foreach (var id in AllCases.Value.Keys.Order(StringComparer.Ordinal))
        {
            data.Add(id);
        }

        return data;
    }

    [Fact]
    public void Descriptors_EveryRpcAndField_HasHostileCases()
    {
        var missing = new List<string>();
        foreach (var method in Services.SelectMany(s => s.Methods))
        {
            var leaves = Leaves(method.InputType, "").ToList();
            if (leaves.Count == 0)
            {
                Assert.Contains(method.Name, NoFields);
                continue;
            }

            _ = Baseline(method.Name, "/backups");
            foreach (var (path, field) in leaves.Where(l => l.Field.FieldType != FieldType.Bool))
            {
                if (!AllCases.Value.Values.Any(c => c.Method == method && c.Path == path))
                {
                    missing.Add($"{method.Name}.{path}");
                }
            }
        }

        Assert.Empty(missing);
        Assert.True(AllCases.Value.Count > 300, $"only {AllCases.Value.Count} cases");
    }

    [Theory]
    [MemberData(nameof(CaseIds))]
    public async Task Rpc_HostileField_InvalidArgumentNamingTheFieldAndTheChannelKeepsWorking(string id)
    {
        var hostile = AllCases.Value[id];
        var request = Baseline(hostile.Method.Name, fixture.BackupRoot);
        hostile.Mutate(request);

        var e = await Assert.ThrowsAsync<RpcException>(() => CallAsync(fixture.Channel, hostile.Method, request, TimeSpan.FromSeconds(15)));

        Assert.True(e.StatusCode == StatusCode.InvalidArgument, $"{id}: {e.StatusCode} {e.Status.Detail}");
        Assert.True(e.Status.Detail.Length <= MaxMessage, $"{id}: message of {e.Status.Detail.Length} characters");
        Assert.DoesNotContain(new string('a', 100), e.Status.Detail, StringComparison.Ordinal);
        var status = e.GetRpcStatus();
        Assert.NotNull(status);
        var violation = Assert.Single(Assert.IsType<BadRequest>(status.GetDetail<BadRequest>()).FieldViolations);
        Assert.True(violation.Field == hostile.ExpectedField, $"{id}: the violation names '{violation.Field}', expected '{hostile.ExpectedField}': {e.Status.Detail}");
        Assert.True(violation.Description.Length <= MaxMessage);
        Assert.Equal("orchestrator.dev", status.GetDetail<ErrorInfo>()?.Domain);

        // The same channel answers a normal call at once.
        var hosts = await new FleetService.FleetServiceClient(fixture.Channel)
            .ListHostsAsync(new ListHostsRequest(), deadline: DateTime.UtcNow.AddSeconds(5));
        Assert.Contains(hosts.Hosts, h => h.Name == "demo-01");
    }

    [Fact]
    public async Task Rpc_HostileFields_LogQuotesNoMoreThanAPrefix()
    {
        var request = new GetVmRequest { Key = "demo-01/" + new string('a', Huge) };
        var e = await Assert.ThrowsAsync<RpcException>(async () => await new FleetService.FleetServiceClient(fixture.Channel).GetVmAsync(request));
        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        var name = new string('b', 1000);
        var named = await Assert.ThrowsAsync<RpcException>(async () =>
            await new BackupService.BackupServiceClient(fixture.Channel).RestoreAsync(new RestoreRequest { Key = RunKey, NewName = "x/" + name }));
        Assert.Equal(StatusCode.InvalidArgument, named.StatusCode);
        Assert.Contains("…(1002 bytes)", named.Status.Detail, StringComparison.Ordinal);

        await Task.Delay(500);
        Assert.Contains("failed with InvalidArgument", fixture.Silo.Log, StringComparison.Ordinal);
        Assert.DoesNotContain(new string('a', 100), fixture.Silo.Log, StringComparison.Ordinal);
        Assert.DoesNotContain(new string('b', 100), fixture.Silo.Log, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Rpc_RequestOverTheSizeLimit_ResourceExhaustedAndTheChannelKeepsWorking()
    {
        var fleet = new FleetService.FleetServiceClient(fixture.Channel);
        var e = await Assert.ThrowsAsync<RpcException>(async () =>
            await fleet.GetVmAsync(new GetVmRequest { Key = new string('a', 2 * 1024 * 1024) }, deadline: DateTime.UtcNow.AddSeconds(15)));
        Assert.Equal(StatusCode.ResourceExhausted, e.StatusCode);
        Assert.True(e.Status.Detail.Length <= MaxMessage);

        var hosts = await fleet.ListHostsAsync(new ListHostsRequest(), deadline: DateTime.UtcNow.AddSeconds(5));
        Assert.Single(hosts.Hosts);
    }

    [Fact]
    public async Task StartBackup_ZeroRetention_RefusedAndNothingPruned()
    {
        var backups = new BackupService.BackupServiceClient(fixture.Channel);
        var target = Path.Combine(fixture.BackupRoot, "zero-retention");
        var first = (await backups.StartBackupAsync(new StartBackupRequest { Vm = "demo-01/web-2", Target = target })).Run;
        var done = await WaitTerminalAsync(backups, first.Key);
        Assert.Equal(BackupStep.Completed, done.Step);
        Assert.True(Directory.Exists(done.BackupSetPath));

        var e = await Assert.ThrowsAsync<RpcException>(async () => await backups.StartBackupAsync(
            new StartBackupRequest { Vm = "demo-01/web-2", Target = target, Retention = new Retention() }));

        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.Equal("retention", Assert.Single(e.GetRpcStatus()!.GetDetail<BadRequest>().FieldViolations).Field);
        var runs = (await backups.ListBackupsAsync(new ListBackupsRequest { Vm = "demo-01/web-2" })).Runs;
        var kept = Assert.Single(runs, r => r.Key == first.Key);
        Assert.Equal(BackupStep.Completed, kept.Step);
        Assert.True(Directory.Exists(done.BackupSetPath), "the earlier backup set was pruned");
        Assert.All(runs, r => Assert.DoesNotContain(r.Steps, s => s.Note.Contains("pruned", StringComparison.Ordinal)));
    }

    private static async Task<BackupRun> WaitTerminalAsync(BackupService.BackupServiceClient backups, string key)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            var run = (await backups.GetBackupAsync(new GetBackupRequest { Key = key })).Run;
            if (run.Step is BackupStep.Completed or BackupStep.Failed || DateTime.UtcNow > deadline)
            {
                return run;
            }

            await Task.Delay(200);
        }
    }

    /// <summary>Calls any RPC by its descriptor on <paramref name="channel"/>; a streaming one is read to its first message.</summary>
    private static async Task CallAsync(GrpcChannel channel, MethodDescriptor descriptor, IMessage request, TimeSpan timeout)
    {
        var input = descriptor.InputType.Parser;
        var output = descriptor.OutputType.Parser;
        var method = new Method<IMessage, IMessage>(
            descriptor.IsServerStreaming ? MethodType.ServerStreaming : MethodType.Unary,
            descriptor.Service.FullName,
            descriptor.Name,
            Marshallers.Create<IMessage>(m => m.ToByteArray(), b => input.ParseFrom(b)),
            Marshallers.Create<IMessage>(m => m.ToByteArray(), b => output.ParseFrom(b)));
        var options = new CallOptions(deadline: DateTime.UtcNow + timeout);
        var invoker = channel.CreateCallInvoker();
        if (descriptor.IsServerStreaming)
        {
            using var call = invoker.AsyncServerStreamingCall(method, null, options, request);
            await call.ResponseStream.MoveNext(CancellationToken.None);
        }
        else
        {
            using var call = invoker.AsyncUnaryCall(method, null, options, request);
            await call.ResponseAsync;
        }
    }

    /// <summary>Every field a caller sets, by its path; a message field is walked into (a Duration is a leaf).</summary>
    private static IEnumerable<(string Path, FieldDescriptor Field)> Leaves(MessageDescriptor message, string prefix)
    {
        foreach (var field in message.Fields.InFieldNumberOrder())
        {
            var path = prefix.Length == 0 ? field.Name : $"{prefix}.{field.Name}";
            if (field.FieldType == FieldType.Message && !field.IsMap && !field.IsRepeated && field.MessageType != Duration.Descriptor)
            {
                foreach (var leaf in Leaves(field.MessageType, path))
                {
                    yield return leaf;
                }
            }
            else
            {
                yield return (path, field);
            }
        }
    }

    private static IEnumerable<HostileCase> CasesOf(MethodDescriptor method)
    {
        foreach (var (path, field) in Leaves(method.InputType, ""))
        {
            var key = $"{method.Name}.{path}";
            var named = FieldNames.TryGetValue(key, out var name) ? name : method.Name == "ApplyPolicy" ? path["spec.".Length..] : path;
            HostileCase Case(string kind, Action<IMessage> mutate, string? expected = null) =>
                new($"{key}:{kind}", method, path, mutate, expected ?? named);

            if (field.IsMap)
            {
                // map<string, string> (labels): hostile keys are named by the map, hostile values by their entry.
                foreach (var (kind, value) in StringValues(required: true, freeText: true))
                {
                    yield return Case($"key-{kind}", m => SetMap(m, path, value, "web"));
                    if (kind != "empty")
                    {
                        yield return Case($"value-{kind}", m => SetMap(m, path, "tier", value), $"{named}.tier");
                    }
                }

                yield return Case("too-many", m => SetMapEntries(m, path, 10_000));
                continue;
            }

            if (field.IsRepeated)
            {
                Assert.Equal(FieldType.String, field.FieldType);
                foreach (var (kind, value) in StringValues(required: true, freeText: false))
                {
                    yield return Case(kind, m => SetList(m, path, [value]), $"{named}[0]");
                }

                yield return Case("too-many", m => SetList(m, path, [.. Enumerable.Repeat("a", 10_000)]));
                continue;
            }

            switch (field.FieldType)
            {
                case FieldType.Bool:
                    break;
                case FieldType.String:
                    foreach (var (kind, value) in StringValues(!Optional.Contains(key), FreeText.Contains(key)))
                    {
                        yield return Case(kind, m => Set(m, path, value));
                    }

                    // A VM name that is a path step, wherever a VM is named.
                    var baseline = (string)Get(Baseline(method.Name, "/backups"), path)!;
                    if (baseline.Contains("/web-1", StringComparison.Ordinal))
                    {
                        yield return Case("vm-dotdot", m => Set(m, path, baseline.Replace("/web-1", "/..", StringComparison.Ordinal)));
                        yield return Case("vm-dot", m => Set(m, path, baseline.Replace("/web-1", "/.", StringComparison.Ordinal)));
                    }
                    else if (path == "new_name")
                    {
                        yield return Case("vm-dotdot", m => Set(m, path, ".."));
                        yield return Case("vm-dot", m => Set(m, path, "."));
                    }

                    break;
                case FieldType.Int32:
                    yield return Case("negative", m => Set(m, path, -1));
                    yield return Case("max", m => Set(m, path, int.MaxValue));
                    yield return Case("min", m => Set(m, path, int.MinValue));
                    break;
                case FieldType.Int64:
                    yield return Case("negative", m => Set(m, path, -1L));
                    yield return Case("max", m => Set(m, path, long.MaxValue));
                    break;
                case FieldType.Enum:
                    yield return Case("undefined", m => Set(m, path, System.Enum.ToObject(field.EnumType.ClrType, 999)));
                    if (RequiredEnums.Contains(key))
                    {
                        yield return Case("unspecified", m => Set(m, path, System.Enum.ToObject(field.EnumType.ClrType, 0)));
                    }

                    break;
                case FieldType.Message when field.MessageType == Duration.Descriptor:
                    yield return Case("negative", m => Set(m, path, new Duration { Seconds = -60 }));
                    yield return Case("century", m => Set(m, path, new Duration { Seconds = 3_155_760_000 }));
                    yield return Case("out-of-range", m => Set(m, path, new Duration { Seconds = 400_000_000_000 }));
                    yield return Case("mixed-signs", m => Set(m, path, new Duration { Seconds = 1, Nanos = -5 }));
                    break;
                default:
                    throw new InvalidOperationException($"{key}: no hostile values for a field of type {field.FieldType}; add them to {nameof(HostileInputTests)}");
            }
        }
    }

    private static IEnumerable<(string Kind, string Value)> StringValues(bool required, bool freeText)
    {
        if (required)
        {
            yield return ("empty", "");
        }

        yield return ("huge", new string('a', Huge));
        yield return ("huge-multibyte", new string('é', Huge / 2));
        yield return ("control", "web\u0001x");
        yield return ("nul", "web\0x");
        yield return ("escape", "web\u001b[2Jx");
        if (!freeText)
        {
            yield return ("newline", "web\nx");
            yield return ("traversal", "../../etc/passwd");
            yield return ("absolute", "/etc");
        }
    }

    private static IMessage ParentOf(IMessage root, string path, out FieldDescriptor field)
    {
        var parts = path.Split('.');
        var message = root;
        foreach (var part in parts[..^1])
        {
            var f = message.Descriptor.FindFieldByName(part);
            if (f.Accessor.GetValue(message) is not IMessage child)
            {
                child = (IMessage)Activator.CreateInstance(f.MessageType.ClrType)!;
                f.Accessor.SetValue(message, child);
            }

            message = child;
        }

        field = message.Descriptor.FindFieldByName(parts[^1]);
        return message;
    }

    private static object? Get(IMessage root, string path) => ParentOf(root, path, out var f) is var parent ? f.Accessor.GetValue(parent) : null;

    private static void Set(IMessage root, string path, object value)
    {
        var parent = ParentOf(root, path, out var field);
        field.Accessor.SetValue(parent, value);
    }

    private static void SetList(IMessage root, string path, string[] values)
    {
        var list = (IList)Get(root, path)!;
        list.Clear();
        foreach (var value in values)
        {
            list.Add(value);
        }
    }

    private static void SetMap(IMessage root, string path, string key, string value)
    {
        var map = (IDictionary)Get(root, path)!;
        map.Clear();
        map[key] = value;
    }

    private static void SetMapEntries(IMessage root, string path, int count)
    {
        var map = (IDictionary)Get(root, path)!;
        for (var i = 0; i < count; i++)
        {
            map[$"k{i}"] = "v";
        }
    }
}
