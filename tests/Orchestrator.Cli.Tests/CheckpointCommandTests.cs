using System.Text.Json;
using Google.Protobuf.WellKnownTypes;
using Google.Rpc;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Commands;
using Orchestrator.Cli.Infrastructure;
using Orchestrator.Cli.Tests.Fakes;

namespace Orchestrator.Cli.Tests;

/// <summary><c>orchestrator checkpoint ...</c> against a fake call invoker: requests sent, JSON printed (a contract), exit codes.</summary>
public sealed class CheckpointCommandTests
{
    private static readonly DateTime Created = new(2025, 1, 31, 22, 4, 5, DateTimeKind.Utc);

    private static string[] PropertyNames(JsonElement element) => [.. element.EnumerateObject().Select(p => p.Name)];

    [Fact]
    public async Task Create_WithName_SendsKeyAndNameAndPrintsTheCheckpoint()
    {
        var invoker = new FakeCallInvoker().On<CreateCheckpointRequest, CreateCheckpointResponse>(
            "CreateCheckpoint", r => new CreateCheckpointResponse { Checkpoint = Running(r.Name) });

        CliRun run = await CliRun.RunAsync(invoker, "checkpoint", "create", "kvm-01/web-1", "--name", "before-upgrade", "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var request = Assert.IsType<CreateCheckpointRequest>(Assert.Single(invoker.Calls).Request);
        Assert.Equal("kvm-01/web-1", request.Key);
        Assert.Equal("before-upgrade", request.Name);
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        JsonElement root = json.RootElement;
        Assert.Equal(
            ["key", "name", "created_at", "with_memory", "size_bytes", "pause_ms", "pause_source", "origin", "state", "duration_ms"],
            PropertyNames(root));
        Assert.Equal("kvm-01/web-1", root.GetProperty("key").GetString());
        Assert.Equal("before-upgrade", root.GetProperty("name").GetString());
        Assert.Equal("2025-01-31T22:04:05Z", root.GetProperty("created_at").GetString());
        Assert.True(root.GetProperty("with_memory").GetBoolean());
        Assert.Equal(JsonValueKind.Null, root.GetProperty("size_bytes").ValueKind);
        Assert.Equal(231.5, root.GetProperty("pause_ms").GetDouble());
        Assert.Equal("events", root.GetProperty("pause_source").GetString());
        Assert.Equal("manual", root.GetProperty("origin").GetString());
        Assert.Equal("running", root.GetProperty("state").GetString());
        Assert.Equal(402.3, root.GetProperty("duration_ms").GetDouble());
    }

    [Fact]
    public async Task Create_WithoutName_SendsAnEmptyNameForTheServerToPick()
    {
        var invoker = new FakeCallInvoker().On<CreateCheckpointRequest, CreateCheckpointResponse>(
            "CreateCheckpoint", _ => new CreateCheckpointResponse { Checkpoint = Running("cp-20250131-220405") });

        CliRun run = await CliRun.RunAsync(invoker, "checkpoint", "create", "kvm-01/web-1");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal("", Assert.IsType<CreateCheckpointRequest>(Assert.Single(invoker.Calls).Request).Name);
        Assert.Contains("Pause:", run.Stdout, StringComparison.Ordinal);
        Assert.Contains("232 ms (events)", run.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Create_RawDisk_ExitsFailedPreconditionWithReasonAndAlternative()
    {
        const string Message = "VM 'kvm-01/legacy-1' cannot take internal checkpoints: disk vda (/images/legacy.raw) is raw. Internal checkpoints need qcow2; use a live backup, or convert the disk";
        var invoker = new FakeCallInvoker().Fail(
            "CreateCheckpoint",
            Samples.RichError(Code.FailedPrecondition, Message, new ErrorInfo { Reason = "RAW_DISK", Domain = "orchestrator.dev" }));

        CliRun run = await CliRun.RunAsync(invoker, "checkpoint", "create", "kvm-01/legacy-1", "--format", "json");

        Assert.Equal(ExitCodes.FailedPrecondition, run.ExitCode);
        Assert.Empty(run.Stdout);
        Assert.Equal($"error: {Message}{Environment.NewLine}  reason: RAW_DISK{Environment.NewLine}", run.Stderr);
    }

    [Fact]
    public async Task List_Json_IsAnArrayInTheServersOrder()
    {
        var invoker = new FakeCallInvoker().On<ListCheckpointsRequest, ListCheckpointsResponse>(
            "ListCheckpoints",
            _ => new ListCheckpointsResponse { Checkpoints = { Running("b-first"), External("a-second") } });

        CliRun run = await CliRun.RunAsync(invoker, "checkpoint", "list", "kvm-01/web-1", "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal(["b-first", "a-second"], json.RootElement.EnumerateArray().Select(c => c.GetProperty("name").GetString()!).ToArray());
        JsonElement external = json.RootElement[1];
        Assert.Equal("external", external.GetProperty("origin").GetString());
        Assert.Equal("unknown", external.GetProperty("pause_source").GetString());
        Assert.Equal(JsonValueKind.Null, external.GetProperty("pause_ms").ValueKind);
        Assert.Equal(62717144, external.GetProperty("size_bytes").GetInt64());
    }

    [Fact]
    public async Task List_Table_ShowsSizePauseAndOrigin()
    {
        var invoker = new FakeCallInvoker().On<ListCheckpointsRequest, ListCheckpointsResponse>(
            "ListCheckpoints", _ => new ListCheckpointsResponse { Checkpoints = { External("a-second") } });

        CliRun run = await CliRun.RunAsync(invoker, "checkpoint", "list", "kvm-01/web-1");

        string[] lines = run.Stdout.Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        Assert.Equal(["NAME", "CREATED", "MEMORY", "SIZE", "PAUSE", "ORIGIN", "STATE"], lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("59.8 MiB", lines[1], StringComparison.Ordinal);
        Assert.Contains("external", lines[1], StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(new string[0], RevertTarget.Unspecified)]
    [InlineData(new[] { "--paused" }, RevertTarget.Paused)]
    [InlineData(new[] { "--running" }, RevertTarget.Running)]
    public async Task Revert_SendsTheTargetAsked(string[] flags, RevertTarget expected)
    {
        var invoker = new FakeCallInvoker().On<RevertCheckpointRequest, RevertCheckpointResponse>(
            "RevertCheckpoint", r => new RevertCheckpointResponse { Name = r.Name, PowerState = PowerState.Paused, DurationMs = 1834.26 });

        CliRun run = await CliRun.RunAsync(invoker, ["checkpoint", "revert", "kvm-01/web-1", "good", .. flags, "--format", "json"]);

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var request = Assert.IsType<RevertCheckpointRequest>(Assert.Single(invoker.Calls).Request);
        Assert.Equal(("kvm-01/web-1", "good", expected), (request.Key, request.Name, request.Target));
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal(["key", "name", "power_state", "duration_ms"], PropertyNames(json.RootElement));
        Assert.Equal("paused", json.RootElement.GetProperty("power_state").GetString());
        Assert.Equal(1834.3, json.RootElement.GetProperty("duration_ms").GetDouble());
    }

    [Fact]
    public async Task Revert_PausedAndRunning_IsAUsageErrorAndSendsNothing()
    {
        var invoker = new FakeCallInvoker();

        CliRun run = await CliRun.RunAsync(invoker, "checkpoint", "revert", "kvm-01/web-1", "good", "--paused", "--running");

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.Empty(invoker.Calls);
        Assert.Contains("--paused and --running cannot be used together", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Revert_UnknownCheckpoint_ExitsNotFound()
    {
        var invoker = new FakeCallInvoker().Fail("RevertCheckpoint", Samples.RichError(Code.NotFound, "VM 'kvm-01/web-1' has no checkpoint named 'x'"));

        CliRun run = await CliRun.RunAsync(invoker, "checkpoint", "revert", "kvm-01/web-1", "x");

        Assert.Equal(ExitCodes.NotFound, run.ExitCode);
    }

    [Fact]
    public async Task Delete_PrintsWhatWasDeleted()
    {
        var invoker = new FakeCallInvoker().On<DeleteCheckpointRequest, DeleteCheckpointResponse>("DeleteCheckpoint", _ => new DeleteCheckpointResponse());

        CliRun json = await CliRun.RunAsync(invoker, "checkpoint", "delete", "kvm-01/web-1", "old", "--format", "json");
        CliRun text = await CliRun.RunAsync(invoker, "checkpoint", "delete", "kvm-01/web-1", "old");

        Assert.Equal(ExitCodes.Ok, json.ExitCode);
        using JsonDocument document = JsonDocument.Parse(json.Stdout);
        Assert.Equal(["key", "name", "deleted"], PropertyNames(document.RootElement));
        Assert.True(document.RootElement.GetProperty("deleted").GetBoolean());
        Assert.Equal("Deleted checkpoint old of kvm-01/web-1." + Environment.NewLine, text.Stdout);
        var request = Assert.IsType<DeleteCheckpointRequest>(invoker.Calls[0].Request);
        Assert.Equal(("kvm-01/web-1", "old"), (request.Key, request.Name));
    }

    [Fact]
    public async Task ScheduleSet_SendsCronZoneJitterAndRetention_PrintsTheSchedule()
    {
        var invoker = new FakeCallInvoker().On<SetCheckpointScheduleRequest, SetCheckpointScheduleResponse>(
            "SetCheckpointSchedule", r => new SetCheckpointScheduleResponse { Schedule = Status(r.Key, r.Schedule, r.Retention) });

        CliRun run = await CliRun.RunAsync(
            invoker,
            "checkpoint", "schedule", "set", "kvm-01/web-1", "--cron", "0 */6 * * *", "--tz", "Europe/Berlin", "--jitter", "1m30s",
            "--keep-last", "3", "--keep-daily", "7", "--keep-weekly", "4", "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var request = Assert.IsType<SetCheckpointScheduleRequest>(Assert.Single(invoker.Calls).Request);
        Assert.Equal("0 */6 * * *", request.Schedule.Cron);
        Assert.Equal("Europe/Berlin", request.Schedule.TimeZone);
        Assert.Equal(TimeSpan.FromSeconds(90), request.Schedule.Jitter.ToTimeSpan());
        Assert.Equal(new Api.V1.RetentionPolicy { KeepLast = 3, Daily = 7, Weekly = 4 }, request.Retention);
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        JsonElement root = json.RootElement;
        Assert.Equal(
            ["key", "cron", "time_zone", "jitter_seconds", "retention", "next_due_at", "updated_at", "runs", "last_run", "scheduled_checkpoints", "recent_runs"],
            PropertyNames(root));
        Assert.Equal(["keep_last", "hourly", "daily", "weekly", "monthly"], PropertyNames(root.GetProperty("retention")));
        Assert.Equal(90, root.GetProperty("jitter_seconds").GetDouble());
        Assert.Equal(7, root.GetProperty("retention").GetProperty("daily").GetInt32());
        Assert.Equal(JsonValueKind.Null, root.GetProperty("last_run").ValueKind);
        Assert.Equal("2025-02-01T00:00:00Z", root.GetProperty("next_due_at").GetString());
    }

    [Fact]
    public async Task ScheduleSet_CronMacro_IsSentAsIsNotReadAsAResponseFile()
    {
        var invoker = new FakeCallInvoker().On<SetCheckpointScheduleRequest, SetCheckpointScheduleResponse>(
            "SetCheckpointSchedule", r => new SetCheckpointScheduleResponse { Schedule = Status(r.Key, r.Schedule, r.Retention) });

        CliRun run = await CliRun.RunAsync(invoker, "checkpoint", "schedule", "set", "kvm-01/web-1", "--cron", "@daily", "--keep-daily", "7");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal("@daily", Assert.IsType<SetCheckpointScheduleRequest>(Assert.Single(invoker.Calls).Request).Schedule.Cron);
    }

    [Fact]
    public async Task ScheduleSet_NoCron_IsAUsageError()
    {
        var invoker = new FakeCallInvoker();

        CliRun run = await CliRun.RunAsync(invoker, "checkpoint", "schedule", "set", "kvm-01/web-1", "--keep-last", "3");

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.Empty(invoker.Calls);
    }

    [Theory]
    [InlineData("5x")]
    [InlineData("m5")]
    [InlineData("")]
    public async Task ScheduleSet_BadJitter_IsAUsageErrorNamingTheOption(string jitter)
    {
        var invoker = new FakeCallInvoker();

        CliRun run = await CliRun.RunAsync(invoker, "checkpoint", "schedule", "set", "kvm-01/web-1", "--cron", "@hourly", "--keep-last", "1", "--jitter", jitter);

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.Empty(invoker.Calls);
        Assert.Contains("--jitter", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ScheduleSet_NegativeRetention_IsSentAndTheServersFieldErrorIsShown()
    {
        var invoker = new FakeCallInvoker().Fail(
            "SetCheckpointSchedule",
            Samples.RichError(Code.InvalidArgument, "retention.keep_last: must be 0 or more, not -1", Samples.BadField("retention.keep_last", "retention.keep_last: must be 0 or more, not -1")));

        CliRun run = await CliRun.RunAsync(invoker, "checkpoint", "schedule", "set", "kvm-01/web-1", "--cron", "@hourly", "--keep-last", "-1");

        Assert.Equal(ExitCodes.InvalidArgument, run.ExitCode);
        Assert.Equal(-1, Assert.IsType<SetCheckpointScheduleRequest>(Assert.Single(invoker.Calls).Request).Retention.KeepLast);
        Assert.Contains("field retention.keep_last: ", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ScheduleShow_OneVm_PrintsItsScheduleWithTheLastRun()
    {
        var status = Status("kvm-01/web-1", new Api.V1.CheckpointSchedule { Cron = "@hourly" }, new Api.V1.RetentionPolicy { KeepLast = 2 });
        status.Runs = 3;
        status.LastRun = new ScheduledRun
        {
            At = Timestamp.FromDateTime(Created),
            DueAt = Timestamp.FromDateTime(Created.AddHours(-4)),
            Checkpoint = "auto-20250131-220405",
            SkippedSlots = 3,
            Pruned = { "auto-20250131-180000" },
        };
        status.ScheduledCheckpoints.Add("auto-20250131-220405");
        status.RecentRuns.Add(status.LastRun);
        var invoker = new FakeCallInvoker().On<GetCheckpointScheduleRequest, GetCheckpointScheduleResponse>(
            "GetCheckpointSchedule", _ => new GetCheckpointScheduleResponse { Schedule = status });

        CliRun json = await CliRun.RunAsync(invoker, "checkpoint", "schedule", "show", "kvm-01/web-1", "--format", "json");
        CliRun text = await CliRun.RunAsync(invoker, "checkpoint", "schedule", "show", "kvm-01/web-1");

        using JsonDocument document = JsonDocument.Parse(json.Stdout);
        JsonElement lastRun = document.RootElement.GetProperty("last_run");
        Assert.Equal(["at", "due_at", "checkpoint", "skipped_slots", "error", "pruned"], PropertyNames(lastRun));
        Assert.Equal(3, lastRun.GetProperty("skipped_slots").GetInt32());
        JsonElement recent = Assert.Single(document.RootElement.GetProperty("recent_runs").EnumerateArray().ToList());
        Assert.Equal(PropertyNames(lastRun), PropertyNames(recent));
        Assert.Equal("auto-20250131-220405", recent.GetProperty("checkpoint").GetString());
        Assert.Equal("UTC", document.RootElement.GetProperty("time_zone").GetString());
        Assert.Contains("auto-20250131-220405 (caught up 3 missed)", text.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ScheduleShow_All_ListsSchedulesSortedAndWarnsAboutDownHosts()
    {
        var invoker = new FakeCallInvoker().On<ListCheckpointSchedulesRequest, ListCheckpointSchedulesResponse>(
            "ListCheckpointSchedules",
            _ => new ListCheckpointSchedulesResponse
            {
                Schedules = { Status("kvm-02/db-1", new Api.V1.CheckpointSchedule { Cron = "@daily" }, new Api.V1.RetentionPolicy { Daily = 7 }), Status("kvm-01/web-1", new Api.V1.CheckpointSchedule { Cron = "@hourly" }, new Api.V1.RetentionPolicy { KeepLast = 2 }) },
                UnavailableHosts = { "kvm-03" },
            });

        CliRun run = await CliRun.RunAsync(invoker, "checkpoint", "schedule", "show", "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal(["kvm-01/web-1", "kvm-02/db-1"], json.RootElement.EnumerateArray().Select(s => s.GetProperty("key").GetString()!).ToArray());
        Assert.Equal("warning: host kvm-03 is unavailable (its silo is down); its schedules are not listed" + Environment.NewLine, run.Stderr);
        Assert.Equal("", Assert.IsType<ListCheckpointSchedulesRequest>(Assert.Single(invoker.Calls).Request).Host);
    }

    [Fact]
    public async Task ScheduleDelete_ReportsWhetherThereWasOne()
    {
        var invoker = new FakeCallInvoker().On<DeleteCheckpointScheduleRequest, DeleteCheckpointScheduleResponse>(
            "DeleteCheckpointSchedule", _ => new DeleteCheckpointScheduleResponse { Deleted = false });

        CliRun run = await CliRun.RunAsync(invoker, "checkpoint", "schedule", "delete", "kvm-01/web-1");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal("kvm-01/web-1 had no checkpoint schedule." + Environment.NewLine, run.Stdout);
    }

    [Theory]
    [InlineData("90", 90)]
    [InlineData("1.5", 1.5)]
    [InlineData("500ms", 0.5)]
    [InlineData("45s", 45)]
    [InlineData("5m", 300)]
    [InlineData("1h30m", 5400)]
    [InlineData("2d", 172800)]
    public void TryParseDuration_AcceptedForms(string text, double seconds)
    {
        Assert.True(DurationText.TryParse(text, out TimeSpan value));
        Assert.Equal(TimeSpan.FromSeconds(seconds), value);
    }

    private static Checkpoint Running(string name) => new()
    {
        Name = name,
        CreatedAt = Timestamp.FromDateTime(Created),
        WithMemory = true,
        PauseMs = 231.5,
        PauseSource = Api.V1.PauseSource.Events,
        Origin = Api.V1.CheckpointOrigin.Manual,
        State = PowerState.Running,
        DurationMs = 402.31,
    };

    private static Checkpoint External(string name) => new()
    {
        Name = name,
        CreatedAt = Timestamp.FromDateTime(Created.AddMinutes(1)),
        WithMemory = true,
        SizeBytes = 62717144,
        PauseSource = Api.V1.PauseSource.Unknown,
        Origin = Api.V1.CheckpointOrigin.External,
        State = PowerState.Running,
    };

    private static CheckpointScheduleStatus Status(string key, Api.V1.CheckpointSchedule schedule, Api.V1.RetentionPolicy retention) => new()
    {
        Key = key,
        Schedule = schedule,
        Retention = retention,
        NextDueAt = Timestamp.FromDateTime(new DateTime(2025, 2, 1, 0, 0, 0, DateTimeKind.Utc)),
        UpdatedAt = Timestamp.FromDateTime(Created),
    };
}
