using System.Runtime.CompilerServices;
using System.Text.Json;
using Google.Rpc;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Tests.Fakes;

namespace Orchestrator.Cli.Tests;

/// <summary>The backup and restore commands against a fake call invoker: what is sent, what is printed, the exit code.</summary>
public sealed class BackupCommandTests
{
    private static readonly string NL = Environment.NewLine;

    private static string[] Lines(string text) => text.Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);

    private static FakeCallInvoker Watching(params BackupRun[] runs) =>
        new FakeCallInvoker().OnStream<WatchBackupRequest, WatchBackupResponse>(
            "WatchBackup", [.. runs.Select(run => new WatchBackupResponse { Run = run })]);

    [Fact]
    public async Task Start_EveryOption_SendsThemAll()
    {
        var invoker = new FakeCallInvoker().On<StartBackupRequest, StartBackupResponse>(
            "StartBackup", _ => new StartBackupResponse { Run = Samples.CopyingRun().WithStep(BackupStep.Admitted) });

        CliRun run = await CliRun.RunAsync(
            invoker,
            "backup", "start", "kvm-01/web-1", "--target", "/srv/backups/web", "--quiesce", "required", "--no-verify",
            "--bandwidth", "50M", "--keep-last", "3", "--keep-daily", "7", "--keep-weekly", "4", "--keep-monthly", "12");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var request = Assert.IsType<StartBackupRequest>(Assert.Single(invoker.Calls).Request);
        Assert.Equal("kvm-01/web-1", request.Vm);
        Assert.Equal("/srv/backups/web", request.Target);
        Assert.Equal(QuiesceMode.Required, request.Quiesce);
        Assert.True(request.SkipVerify);
        Assert.Equal(50L * 1024 * 1024, request.BandwidthBytesPerSecond);
        Assert.Equal(new Retention { KeepLast = 3, KeepDaily = 7, KeepWeekly = 4, KeepMonthly = 12 }, request.Retention);
    }

    [Fact]
    public async Task Start_NoOptions_SendsDefaultsAndNoRetention_PrintsTheAdmittedRun()
    {
        var invoker = new FakeCallInvoker().On<StartBackupRequest, StartBackupResponse>(
            "StartBackup", _ => new StartBackupResponse { Run = Samples.CopyingRun().WithStep(BackupStep.Admitted) });

        CliRun run = await CliRun.RunAsync(invoker, "backup", "start", "kvm-01/web-1");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var request = Assert.IsType<StartBackupRequest>(Assert.Single(invoker.Calls).Request);
        Assert.Equal("", request.Target);
        Assert.Equal(QuiesceMode.Unspecified, request.Quiesce);
        Assert.False(request.SkipVerify);
        Assert.Equal(0, request.BandwidthBytesPerSecond);
        Assert.Null(request.Retention);
        Assert.Contains($"Key:         {Samples.RunKey}", Lines(run.Stdout));
        Assert.Contains("Step:        admitted", Lines(run.Stdout));
        Assert.Empty(run.Stderr);
    }

    [Fact]
    public async Task Start_OneKeepOption_SendsRetentionWithZerosForTheOthers()
    {
        var invoker = new FakeCallInvoker().On<StartBackupRequest, StartBackupResponse>(
            "StartBackup", _ => new StartBackupResponse { Run = Samples.CopyingRun() });

        CliRun run = await CliRun.RunAsync(invoker, "backup", "start", "kvm-01/web-1", "--keep-daily", "7", "--quiesce", "try");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var request = Assert.IsType<StartBackupRequest>(Assert.Single(invoker.Calls).Request);
        Assert.Equal(new Retention { KeepDaily = 7 }, request.Retention);
        Assert.Equal(QuiesceMode.Try, request.Quiesce);
    }

    [Fact]
    public async Task StartWait_RunCompletes_PrintsOnlyTheEndedRunAndExitsOk()
    {
        FakeCallInvoker invoker = Watching(Samples.CopyingRun(), Samples.CompletedRun())
            .On<StartBackupRequest, StartBackupResponse>(
                "StartBackup", _ => new StartBackupResponse { Run = Samples.CopyingRun().WithStep(BackupStep.Admitted) });

        CliRun run = await CliRun.RunAsync(invoker, "backup", "start", "kvm-01/web-1", "--wait", "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal(["StartBackup", "WatchBackup"], invoker.Calls.Select(c => c.Method));
        Assert.Equal(Samples.RunKey, Assert.IsType<WatchBackupRequest>(invoker.Calls[1].Request).Key);
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal("completed", json.RootElement.GetProperty("step").GetString());
        Assert.Equal(
            $"backup {Samples.RunKey} admitted; waiting for it to end{NL}backup {Samples.RunKey}: copying{NL}backup {Samples.RunKey}: completed{NL}",
            run.Stderr);
    }

    [Fact]
    public async Task StartWait_RunFails_PrintsTheFailedRunAndExitsRunFailed()
    {
        FakeCallInvoker invoker = Watching(Samples.CopyingRun(), Samples.FailedRun())
            .On<StartBackupRequest, StartBackupResponse>("StartBackup", _ => new StartBackupResponse { Run = Samples.CopyingRun() });

        CliRun run = await CliRun.RunAsync(invoker, "backup", "start", "kvm-01/web-1", "--wait", "--format", "json");

        Assert.Equal(ExitCodes.RunFailed, run.ExitCode);
        Assert.Equal(7, ExitCodes.RunFailed);
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal("failed", json.RootElement.GetProperty("step").GetString());
        Assert.EndsWith($"error: backup {Samples.RunKey} failed: no space left on device{NL}", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task StartWithoutWait_RunAlreadyFailed_StillExitsOk()
    {
        // Without --wait the command reports the admission only; the run's fate is for watch or show.
        var invoker = new FakeCallInvoker().On<StartBackupRequest, StartBackupResponse>(
            "StartBackup", _ => new StartBackupResponse { Run = Samples.FailedRun() });

        CliRun run = await CliRun.RunAsync(invoker, "backup", "start", "kvm-01/web-1");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Single(invoker.Calls);
    }

    [Fact]
    public async Task Start_ServerRefuses_ExitsWithTheMappedCode()
    {
        var invoker = new FakeCallInvoker().Fail(
            "StartBackup", Samples.RichError(Code.FailedPrecondition, "VM kvm-01/web-1 is shut off; live backups need a running VM"));

        CliRun run = await CliRun.RunAsync(invoker, "backup", "start", "kvm-01/web-1", "--wait");

        Assert.Equal(ExitCodes.FailedPrecondition, run.ExitCode);
        Assert.Empty(run.Stdout);
        Assert.Single(invoker.Calls);
    }

    [Fact]
    public async Task WatchJson_NotATerminal_PrintsOneCompactRunPerLine_ThenExitsOk()
    {
        FakeCallInvoker invoker = Watching(Samples.CopyingRun().WithStep(BackupStep.Admitted), Samples.CopyingRun(), Samples.CompletedRun());

        CliRun run = await CliRun.RunAsync(invoker, "backup", "watch", Samples.RunKey, "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Empty(run.Stderr);
        string[] lines = run.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(3, lines.Length);
        string[] steps = [.. lines.Select(line =>
        {
            using JsonDocument json = JsonDocument.Parse(line);
            Assert.Equal(Samples.RunKey, json.RootElement.GetProperty("key").GetString());
            return json.RootElement.GetProperty("step").GetString()!;
        })];
        Assert.Equal(["admitted", "copying", "completed"], steps);
        Assert.All(lines, line => Assert.StartsWith("{\"key\":", line, StringComparison.Ordinal));
    }

    [Fact]
    public async Task WatchJson_RunFails_LastLineIsTheFailedRun_ExitsRunFailed()
    {
        FakeCallInvoker invoker = Watching(Samples.CopyingRun(), Samples.FailedRun());

        CliRun run = await CliRun.RunAsync(invoker, "backup", "watch", Samples.RunKey, "--format", "json");

        Assert.Equal(ExitCodes.RunFailed, run.ExitCode);
        string last = Lines(run.Stdout)[^1];
        using JsonDocument json = JsonDocument.Parse(last);
        Assert.Equal("failed", json.RootElement.GetProperty("step").GetString());
        Assert.Equal("no space left on device", json.RootElement.GetProperty("error").GetString());
        Assert.Equal($"error: backup {Samples.RunKey} failed: no space left on device{NL}", run.Stderr);
    }

    [Fact]
    public async Task WatchTable_NotATerminal_PrintsOneLinePerUpdate_NoEscapes()
    {
        FakeCallInvoker invoker = Watching(Samples.CopyingRun(), Samples.CompletedRun());
        var clock = new FixedClock(Samples.RunStart.AddSeconds(45));

        CliRun run = await CliRun.RunWithAsync(invoker, environment => environment with { Clock = clock }, "backup", "watch", Samples.RunKey);

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal(
            [
                "0:00:45  copying  1 GiB/12 GiB  8%  vda 50%  vdb 0%",
                "0:01:23  completed  12 GiB/12 GiB  100%  vda 100%  vdb 100%",
            ],
            Lines(run.Stdout));
        Assert.DoesNotContain('\u001b', run.Stdout);
    }

    [Fact]
    public async Task WatchTable_Terminal_RedrawsTheFrameInPlace()
    {
        FakeCallInvoker invoker = Watching(Samples.CopyingRun(), Samples.CompletedRun());
        var clock = new FixedClock(Samples.RunStart.AddSeconds(45));

        CliRun run = await CliRun.RunWithAsync(
            invoker, environment => environment with { Clock = clock, Interactive = true }, "backup", "watch", Samples.RunKey);

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        // Frame 1 (heading + 2 disks), then cursor up 3 lines and clear, then frame 2.
        int redraw = run.Stdout.IndexOf("\u001b[3F\u001b[J", StringComparison.Ordinal);
        Assert.True(redraw > 0, run.Stdout);
        string first = run.Stdout[..redraw];
        string second = run.Stdout[(redraw + "\u001b[3F\u001b[J".Length)..];
        Assert.StartsWith($"{Samples.RunKey}  copying  elapsed 0:00:45{NL}", first, StringComparison.Ordinal);
        Assert.Contains("  vda  [###############...............]  1 GiB/2 GiB   50%" + NL + "  vdb  [..............................]   0 B/10 GiB    0%", first, StringComparison.Ordinal);
        Assert.StartsWith($"{Samples.RunKey}  completed  elapsed 0:01:23{NL}", second, StringComparison.Ordinal);
        Assert.Contains("  vdb  [##############################]  10 GiB/10 GiB  100%", second, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Watch_StreamEndsBeforeTheRun_ExitsUnavailableSayingHowToResume()
    {
        FakeCallInvoker invoker = Watching(Samples.CopyingRun());

        CliRun run = await CliRun.RunAsync(invoker, "backup", "watch", Samples.RunKey, "--format", "json");

        Assert.Equal(ExitCodes.Unavailable, run.ExitCode);
        Assert.Single(Lines(run.Stdout));
        Assert.Contains($"run 'orchestrator backup watch {Samples.RunKey}' to follow it again", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Watch_NoFirstAnswerWithinTimeout_ExitsUnavailable()
    {
        var invoker = new FakeCallInvoker().OnStream<WatchBackupRequest, WatchBackupResponse>("WatchBackup", (_, ct) => Never(ct));

        CliRun run = await CliRun.RunAsync(invoker, "backup", "watch", Samples.RunKey, "--timeout", "0.2");

        Assert.Equal(ExitCodes.Unavailable, run.ExitCode);
        Assert.Equal($"error: no answer from http://127.0.0.1:7070 within 0.2 s (raise --timeout to wait longer){NL}", run.Stderr);
    }

    [Fact]
    public async Task Watch_UpdatesSlowerThanTimeout_KeepsWatching()
    {
        // --timeout bounds the first answer only: a run may go quiet for longer than that between updates.
        var invoker = new FakeCallInvoker().OnStream<WatchBackupRequest, WatchBackupResponse>("WatchBackup", (_, ct) => Slow(ct));

        CliRun run = await CliRun.RunAsync(invoker, "backup", "watch", Samples.RunKey, "--timeout", "0.2", "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal(2, Lines(run.Stdout).Length);

        static async IAsyncEnumerable<WatchBackupResponse> Slow([EnumeratorCancellation] CancellationToken ct)
        {
            yield return new WatchBackupResponse { Run = Samples.CopyingRun() };
            await Task.Delay(TimeSpan.FromMilliseconds(600), ct);
            yield return new WatchBackupResponse { Run = Samples.CompletedRun() };
        }
    }

    [Fact]
    public async Task Watch_ServerSaysNotFound_ExitsNotFound()
    {
        var invoker = new FakeCallInvoker().OnStream<WatchBackupRequest, WatchBackupResponse>(
            "WatchBackup", (_, _) => Failing(Samples.RichError(Code.NotFound, $"backup run {Samples.RunKey} not found")));

        CliRun run = await CliRun.RunAsync(invoker, "backup", "watch", Samples.RunKey);

        Assert.Equal(ExitCodes.NotFound, run.ExitCode);
        Assert.Equal($"error: backup run {Samples.RunKey} not found{NL}", run.Stderr);
    }

    [Fact]
    public async Task List_SortsNewestFirstAndWarnsAboutDownHosts()
    {
        var invoker = new FakeCallInvoker().On<ListBackupsRequest, ListBackupsResponse>(
            "ListBackups",
            _ => new ListBackupsResponse
            {
                Runs = { Samples.RunOf("kvm-01/a/b-1", Samples.RunStart), Samples.RunOf("kvm-01/b/b-2", Samples.RunStart.AddHours(1)) },
                UnavailableHosts = { "kvm-03", "kvm-02" },
            });

        CliRun run = await CliRun.RunAsync(invoker, "backup", "list", "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var request = Assert.IsType<ListBackupsRequest>(Assert.Single(invoker.Calls).Request);
        Assert.Equal(("", ""), (request.Vm, request.Host));
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal(["kvm-01/b/b-2", "kvm-01/a/b-1"], json.RootElement.EnumerateArray().Select(r => r.GetProperty("key").GetString()!));
        Assert.Equal(
            "warning: host kvm-02 is unavailable (its silo is down); its backups are not listed" + NL
            + "warning: host kvm-03 is unavailable (its silo is down); its backups are not listed" + NL,
            run.Stderr);
    }

    [Theory]
    [InlineData("--vm", "kvm-01/web-1", "kvm-01/web-1", "")]
    [InlineData("--host", "kvm-01", "", "kvm-01")]
    public async Task List_WithFilter_SendsIt(string option, string value, string vm, string host)
    {
        var invoker = new FakeCallInvoker().On<ListBackupsRequest, ListBackupsResponse>("ListBackups", _ => new ListBackupsResponse());

        CliRun run = await CliRun.RunAsync(invoker, "backup", "list", option, value);

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var request = Assert.IsType<ListBackupsRequest>(Assert.Single(invoker.Calls).Request);
        Assert.Equal((vm, host), (request.Vm, request.Host));
        Assert.Equal("No backups." + NL, run.Stdout);
    }

    [Fact]
    public async Task List_TheOneHostAskedForIsDown_ExitsUnavailable()
    {
        var invoker = new FakeCallInvoker().On<ListBackupsRequest, ListBackupsResponse>(
            "ListBackups", _ => new ListBackupsResponse { UnavailableHosts = { "kvm-02" } });

        CliRun run = await CliRun.RunAsync(invoker, "backup", "list", "--host", "kvm-02");

        Assert.Equal(ExitCodes.Unavailable, run.ExitCode);
        Assert.Empty(run.Stdout);
    }

    [Fact]
    public async Task Show_Json_SendsTheKeyAndPrintsTheRun()
    {
        var invoker = new FakeCallInvoker().On<GetBackupRequest, GetBackupResponse>(
            "GetBackup", _ => new GetBackupResponse { Run = Samples.CompletedRun() });

        CliRun run = await CliRun.RunAsync(invoker, "backup", "show", Samples.RunKey, "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal(Samples.RunKey, Assert.IsType<GetBackupRequest>(Assert.Single(invoker.Calls).Request).Key);
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal("completed", json.RootElement.GetProperty("step").GetString());
    }

    [Fact]
    public async Task Show_FailedRun_ExitsOk()
    {
        // show reports a run; only the commands that follow one (watch, start --wait) exit 7.
        var invoker = new FakeCallInvoker().On<GetBackupRequest, GetBackupResponse>(
            "GetBackup", _ => new GetBackupResponse { Run = Samples.FailedRun() });

        CliRun run = await CliRun.RunAsync(invoker, "backup", "show", Samples.RunKey);

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Contains("Error:       no space left on device", Lines(run.Stdout));
    }

    [Fact]
    public async Task Restore_SendsKeyNameAndDefine_PrintsWhatItMade()
    {
        var invoker = new FakeCallInvoker().On<RestoreRequest, RestoreResponse>(
            "Restore",
            _ => new RestoreResponse
            {
                NewName = "web-1-restored",
                Images = { "/var/lib/libvirt/images/web-1-restored-vda.qcow2", "/var/lib/libvirt/images/web-1-restored-vdb.raw" },
                Defined = true,
                Uuid = "0d4c6b1e-3f7a-4e55-9a52-1b2c3d4e5f60",
                Host = "kvm-01",
            });

        CliRun run = await CliRun.RunAsync(invoker, "restore", Samples.RunKey, "--as", "web-1-restored", "--define");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var request = Assert.IsType<RestoreRequest>(Assert.Single(invoker.Calls).Request);
        Assert.Equal((Samples.RunKey, "web-1-restored", true), (request.Key, request.NewName, request.Define));
        Assert.Equal(
            [
                "New VM:   web-1-restored",
                "Host:     kvm-01",
                "Defined:  yes",
                "Started:  no",
                "UUID:     0d4c6b1e-3f7a-4e55-9a52-1b2c3d4e5f60",
                "IMAGE",
                "/var/lib/libvirt/images/web-1-restored-vda.qcow2",
                "/var/lib/libvirt/images/web-1-restored-vdb.raw",
            ],
            Lines(run.Stdout));
    }

    [Fact]
    public async Task Restore_WithoutDefine_SendsFalse()
    {
        var invoker = new FakeCallInvoker().On<RestoreRequest, RestoreResponse>(
            "Restore", _ => new RestoreResponse { NewName = "copy", Images = { "/img/copy-vda.qcow2" } });

        CliRun run = await CliRun.RunAsync(invoker, "restore", Samples.RunKey, "--as", "copy", "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.False(Assert.IsType<RestoreRequest>(Assert.Single(invoker.Calls).Request).Define);
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal(JsonValueKind.Null, json.RootElement.GetProperty("uuid").ValueKind);
    }

    [Fact]
    public async Task Restore_OnAnotherHostDefinedAndStarted_SendsHostAndStartAndPrintsThem()
    {
        var invoker = new FakeCallInvoker().On<RestoreRequest, RestoreResponse>(
            "Restore", _ => new RestoreResponse { NewName = "copy", Images = { "/restores/copy-vda.raw" }, Defined = true, Host = "kvm-02", Started = true });

        CliRun run = await CliRun.RunAsync(invoker, "restore", Samples.RunKey, "--as", "copy", "--host", "kvm-02", "--define", "--start", "--format", "json");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var request = Assert.IsType<RestoreRequest>(Assert.Single(invoker.Calls).Request);
        Assert.Equal(("kvm-02", true, true), (request.Host, request.Define, request.Start));
        using JsonDocument json = JsonDocument.Parse(run.Stdout);
        Assert.Equal("kvm-02", json.RootElement.GetProperty("host").GetString());
        Assert.True(json.RootElement.GetProperty("started").GetBoolean());
    }

    [Fact]
    public async Task Restore_WithoutHost_SendsNoHost()
    {
        var invoker = new FakeCallInvoker().On<RestoreRequest, RestoreResponse>("Restore", _ => new RestoreResponse { NewName = "copy" });

        CliRun run = await CliRun.RunAsync(invoker, "restore", Samples.RunKey, "--as", "copy");

        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var request = Assert.IsType<RestoreRequest>(Assert.Single(invoker.Calls).Request);
        Assert.Equal(("", false), (request.Host, request.Start));
    }

    [Theory]
    [InlineData("--start: needs --define", "--start")]
    [InlineData("--host: 'kvm/02' is not a host name", "--host", "kvm/02")]
    [InlineData("--host: the host name is empty", "--host", "")]
    public async Task Restore_BadHostOrStartWithoutDefine_UsageErrorNamingTheOptionAndNoCall(string message, params string[] options)
    {
        var invoker = new FakeCallInvoker().On<RestoreRequest, RestoreResponse>("Restore", _ => new RestoreResponse());

        CliRun run = await CliRun.RunAsync(invoker, ["restore", Samples.RunKey, "--as", "copy", .. options]);

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.Contains(message, run.Stderr, StringComparison.Ordinal);
        Assert.Empty(invoker.Calls);
    }

    private static async IAsyncEnumerable<WatchBackupResponse> Never([EnumeratorCancellation] CancellationToken ct)
    {
        await Task.Delay(Timeout.Infinite, ct);
        yield break;
    }

    private static async IAsyncEnumerable<WatchBackupResponse> Failing(Exception exception)
    {
        await Task.Yield();
        throw exception;
#pragma warning disable CS0162 // An iterator needs a yield to be one.
        yield break;
#pragma warning restore CS0162
    }
}
