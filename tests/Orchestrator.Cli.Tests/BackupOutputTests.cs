using System.Text.Json;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Output;
using Orchestrator.Cli.Tests.Fakes;
using Orchestrator.Cli.Views;

namespace Orchestrator.Cli.Tests;

/// <summary>
/// The JSON shape of a backup run and of a restore (a contract with scripts, README.md) and their tables.
/// </summary>
public sealed class BackupOutputTests
{
    private static JsonElement Serialize<T>(T value, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> typeInfo)
    {
        var writer = new StringWriter();
        JsonOutput.Write(writer, value, typeInfo);
        return JsonDocument.Parse(writer.ToString()).RootElement.Clone();
    }

    private static string[] PropertyNames(JsonElement element) => [.. element.EnumerateObject().Select(p => p.Name)];

    private static string[] Lines(string text) => text.Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);

    [Fact]
    public void Run_IsAnObjectWithDocumentedFieldsTypesAndSpellings()
    {
        JsonElement run = Serialize(BackupRunView.From(Samples.CompletedRun()), CliJsonContext.Output.BackupRunView);

        Assert.Equal(
            [
                "key", "host", "vm", "step", "rolling_back", "error", "started_at", "ended_at", "backup_set_path",
                "quiesce_outcome", "freeze_ms", "trace_id", "policy", "policy_version", "policy_run", "disks", "steps", "last_test",
                "method", "level", "parent", "level_reason",
            ],
            PropertyNames(run));
        Assert.Equal(Samples.RunKey, run.GetProperty("key").GetString());
        Assert.Equal("kvm-01", run.GetProperty("host").GetString());
        Assert.Equal("web-1", run.GetProperty("vm").GetString());
        Assert.Equal("completed", run.GetProperty("step").GetString());
        Assert.False(run.GetProperty("rolling_back").GetBoolean());
        Assert.Equal(JsonValueKind.Null, run.GetProperty("error").ValueKind);
        Assert.Equal("2026-11-26T21:00:00Z", run.GetProperty("started_at").GetString());
        Assert.Equal("2026-11-26T21:01:23Z", run.GetProperty("ended_at").GetString());
        Assert.Equal("/srv/backups/kvm-01/web-1/b-20261126-210000-3f9a1c", run.GetProperty("backup_set_path").GetString());
        Assert.Equal("frozen (2 file systems)", run.GetProperty("quiesce_outcome").GetString());
        Assert.Equal(12.5, run.GetProperty("freeze_ms").GetDouble());
        Assert.Equal("4bf92f3577b34da6a3ce929d0e0e4736", run.GetProperty("trace_id").GetString());
        Assert.Equal("nightly", run.GetProperty("policy").GetString());
        Assert.Equal(3, run.GetProperty("policy_version").GetInt32());
        Assert.Equal("p-20261126-210000-abc123", run.GetProperty("policy_run").GetString());

        // A server that does not say (older than the offline method) ran it live.
        Assert.Equal("live", run.GetProperty("method").GetString());
        var offline = Samples.CompletedRun();
        offline.Method = "offline";
        Assert.Equal("offline", Serialize(BackupRunView.From(offline), CliJsonContext.Output.BackupRunView).GetProperty("method").GetString());
    }

    [Fact]
    public void Run_DisksAndStepsKeepServerOrder_WithDocumentedFields()
    {
        JsonElement run = Serialize(BackupRunView.From(Samples.CompletedRun()), CliJsonContext.Output.BackupRunView);

        JsonElement disk = run.GetProperty("disks")[0];
        Assert.Equal(
            ["target", "base_path", "format", "overlay_path", "backup_path", "bytes_total", "bytes_copied", "sha256", "committed", "verified"],
            PropertyNames(disk));
        Assert.Equal("vda", disk.GetProperty("target").GetString());
        Assert.Equal("/var/lib/libvirt/images/web-1.qcow2", disk.GetProperty("base_path").GetString());
        Assert.Equal("qcow2", disk.GetProperty("format").GetString());
        Assert.Equal("/var/lib/libvirt/images/web-1.b-20261126-210000-3f9a1c.qcow2", disk.GetProperty("overlay_path").GetString());
        Assert.Equal("/srv/backups/kvm-01/web-1/b-20261126-210000-3f9a1c/vda.qcow2", disk.GetProperty("backup_path").GetString());
        Assert.Equal(2L << 30, disk.GetProperty("bytes_total").GetInt64());
        Assert.Equal(2L << 30, disk.GetProperty("bytes_copied").GetInt64());
        Assert.Equal("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", disk.GetProperty("sha256").GetString());
        Assert.True(disk.GetProperty("committed").GetBoolean());
        Assert.True(disk.GetProperty("verified").GetBoolean());
        Assert.Equal("vdb", run.GetProperty("disks")[1].GetProperty("target").GetString());

        JsonElement steps = run.GetProperty("steps");
        Assert.Equal(["admitted", "copying", "completed"], steps.EnumerateArray().Select(s => s.GetProperty("step").GetString()!));
        Assert.Equal(["step", "at", "note"], PropertyNames(steps[1]));
        Assert.Equal("2026-11-26T21:00:02Z", steps[1].GetProperty("at").GetString());
        Assert.Equal("2 disks", steps[1].GetProperty("note").GetString());
        Assert.Equal(JsonValueKind.Null, steps[0].GetProperty("note").ValueKind);
    }

    [Fact]
    public void Run_EmptyStringsFromTheServer_AreNullWhereDocumented()
    {
        BackupRun sample = Samples.CopyingRun();
        sample.TraceId = "";
        sample.Policy = "";
        sample.PolicyRun = "";

        JsonElement run = Serialize(BackupRunView.From(sample), CliJsonContext.Output.BackupRunView);

        Assert.Equal(JsonValueKind.Null, run.GetProperty("error").ValueKind);
        Assert.Equal(JsonValueKind.Null, run.GetProperty("ended_at").ValueKind);
        Assert.Equal(JsonValueKind.Null, run.GetProperty("trace_id").ValueKind);
        Assert.Equal(JsonValueKind.Null, run.GetProperty("policy").ValueKind);
        Assert.Equal(JsonValueKind.Null, run.GetProperty("policy_run").ValueKind);
        Assert.Equal(JsonValueKind.Null, run.GetProperty("disks")[0].GetProperty("sha256").ValueKind);
    }

    [Fact]
    public void Run_FailedWhileRollingBack_HasErrorAndFlag()
    {
        BackupRun sample = Samples.FailedRun();
        sample.Step = BackupStep.Committing;
        sample.RollingBack = true;

        JsonElement run = Serialize(BackupRunView.From(sample), CliJsonContext.Output.BackupRunView);

        Assert.Equal("committing", run.GetProperty("step").GetString());
        Assert.True(run.GetProperty("rolling_back").GetBoolean());
        Assert.Equal("no space left on device", run.GetProperty("error").GetString());
    }

    [Fact]
    public void Compact_IsOneLine_SameDocumentAsIndented()
    {
        BackupRunView run = BackupRunView.From(Samples.CompletedRun());
        var compact = new StringWriter();

        JsonOutput.Write(compact, run, CliJsonContext.Compact.BackupRunView);

        string text = compact.ToString();
        Assert.EndsWith(Environment.NewLine, text, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', text[..^Environment.NewLine.Length]);
        Assert.Equal(
            JsonSerializer.Serialize(Serialize(run, CliJsonContext.Output.BackupRunView)),
            JsonSerializer.Serialize(JsonDocument.Parse(text).RootElement));
    }

    [Fact]
    public void Restore_IsAnObjectWithDocumentedFields()
    {
        var response = new RestoreResponse { NewName = "copy", Images = { "/img/copy-vda.qcow2" }, Defined = true, Uuid = "0d4c6b1e-3f7a-4e55-9a52-1b2c3d4e5f60" };

        JsonElement restore = Serialize(RestoreView.From(response), CliJsonContext.Output.RestoreView);

        Assert.Equal(["new_name", "images", "defined", "uuid", "changes", "host", "started"], PropertyNames(restore));
        Assert.Equal("copy", restore.GetProperty("new_name").GetString());
        Assert.Equal("/img/copy-vda.qcow2", restore.GetProperty("images")[0].GetString());
        Assert.True(restore.GetProperty("defined").GetBoolean());
        Assert.Equal("0d4c6b1e-3f7a-4e55-9a52-1b2c3d4e5f60", restore.GetProperty("uuid").GetString());
    }

    public static TheoryData<BackupStep> BackupSteps => [.. Enum.GetValues<BackupStep>()];

    [Theory]
    [MemberData(nameof(BackupSteps))]
    public void EnumNames_EveryKnownBackupStep_IsTheLowercaseProtoNameWithoutPrefix(BackupStep step)
    {
        string protoName = typeof(BackupStep).GetField(step.ToString())!
            .GetCustomAttributes(typeof(Google.Protobuf.Reflection.OriginalNameAttribute), false)
            .Cast<Google.Protobuf.Reflection.OriginalNameAttribute>().Single().Name;

        Assert.Equal(protoName["BACKUP_STEP_".Length..].ToLowerInvariant(), EnumNames.Of(step));
    }

    [Fact]
    public void EnumNames_BackupStepFromANewerServer_IsUnknown()
    {
        Assert.Equal("unknown", EnumNames.Of((BackupStep)99));
    }

    [Fact]
    public void ListTable_ShowsStepTimesDurationBytesAndError()
    {
        BackupRun copying = Samples.CopyingRun();
        copying.Key = "kvm-01/web-1/b-2";
        copying.StartedAt = Google.Protobuf.WellKnownTypes.Timestamp.FromDateTime(Samples.RunStart.AddDays(1));
        BackupRun rollingBack = Samples.FailedRun();
        rollingBack.Key = "kvm-01/web-1/b-0";
        rollingBack.StartedAt = Google.Protobuf.WellKnownTypes.Timestamp.FromDateTime(Samples.RunStart.AddDays(-1));
        rollingBack.Step = BackupStep.Committing;
        rollingBack.RollingBack = true;
        rollingBack.EndedAt = null;
        var writer = new StringWriter();

        BackupRunView.WriteTable(BackupRunView.FromList([rollingBack, Samples.CompletedRun(), copying]), writer, color: false);

        Assert.Equal(
            [
                "KEY                                    STEP                       STARTED               DURATION         BYTES  ERROR",
                "kvm-01/web-1/b-2                       copying                    2026-11-27T21:00:00Z         -  1 GiB/12 GiB  -",
                "kvm-01/web-1/b-20261126-210000-3f9a1c  completed                  2026-11-26T21:00:00Z   0:01:23        12 GiB  -",
                "kvm-01/web-1/b-0                       committing (rolling back)  2026-11-25T21:00:00Z         -  1 GiB/12 GiB  no space left on device",
            ],
            Lines(writer.ToString()));
    }

    [Fact]
    public void ListTable_NoRuns_SaysSo()
    {
        var writer = new StringWriter();

        BackupRunView.WriteTable([], writer, color: false);

        Assert.Equal("No backups." + Environment.NewLine, writer.ToString());
    }

    [Fact]
    public void Details_ListPropertiesThenDisksThenSteps()
    {
        var writer = new StringWriter();

        BackupRunView.WriteDetails(BackupRunView.From(Samples.CompletedRun()), writer, color: false);

        string[] lines = Lines(writer.ToString());
        Assert.Contains($"Key:         {Samples.RunKey}", lines);
        Assert.Contains("Step:        completed", lines);
        Assert.Contains("Error:       -", lines);
        Assert.Contains("Started:     2026-11-26T21:00:00Z", lines);
        Assert.Contains("Ended:       2026-11-26T21:01:23Z", lines);
        Assert.Contains("Duration:    0:01:23", lines);
        Assert.Contains("Bytes:       12 GiB", lines);
        Assert.Contains("Method:      live", lines);
        Assert.Contains("Quiesce:     frozen (2 file systems)", lines);
        Assert.Contains("Freeze:      12.5 ms", lines);
        Assert.Contains("Policy:      nightly (version 3, run p-20261126-210000-abc123)", lines);
        int disks = Array.IndexOf(lines, "DISK  FORMAT  COPIED   TOTAL  DONE  COMMITTED  VERIFIED  SHA256        BACKUP");
        Assert.True(disks > 0, string.Join(Environment.NewLine, lines));
        Assert.Equal(
            "vda   qcow2    2 GiB   2 GiB  100%  yes        yes       9f86d081884c  /srv/backups/kvm-01/web-1/b-20261126-210000-3f9a1c/vda.qcow2",
            lines[disks + 1]);
        int steps = Array.IndexOf(lines, "STEP       AT                    NOTE");
        Assert.True(steps > disks);
        Assert.Equal("copying    2026-11-26T21:00:02Z  2 disks", lines[steps + 2]);
    }

    [Fact]
    public void ProgressLine_FailedRun_EndsWithTheError()
    {
        string line = BackupProgressView.Line(BackupRunView.From(Samples.FailedRun()), Samples.RunStart.AddHours(1));

        Assert.Equal("0:00:30  failed  1 GiB/12 GiB  8%  vda 50%  vdb 0%  error: no space left on device", line);
    }

    [Fact]
    public void ProgressFrame_NoDisksYet_IsTheHeadingOnly()
    {
        BackupRun run = Samples.RunOf(Samples.RunKey, Samples.RunStart);

        IReadOnlyList<string> frame = BackupProgressView.Frame(BackupRunView.From(run), Samples.RunStart.AddSeconds(7), color: false);

        Assert.Equal([$"{Samples.RunKey}  admitted  elapsed 0:00:07"], frame);
    }

    [Fact]
    public void LiveFrame_SecondDraw_MovesUpOverTheFirstAndClears()
    {
        var writer = new StringWriter();
        var live = new LiveFrame(writer);

        live.Draw(["a", "b"]);
        live.Draw(["c"]);
        live.Draw(["d"]);

        string nl = Environment.NewLine;
        Assert.Equal($"a{nl}b{nl}\u001b[2F\u001b[Jc{nl}\u001b[1F\u001b[Jd{nl}", writer.ToString());
    }

    [Theory]
    [InlineData(0L, "0 B")]
    [InlineData(1023L, "1023 B")]
    [InlineData(1024L, "1 KiB")]
    [InlineData(1536L, "1.5 KiB")]
    [InlineData(10L << 30, "10 GiB")]
    [InlineData(3L << 40, "3 TiB")]
    public void Bytes_UsesTheLargestBinaryUnit(long bytes, string expected)
    {
        Assert.Equal(expected, TextFormat.Bytes(bytes));
    }

    [Theory]
    [InlineData(0L, 0L, "0%")]
    [InlineData(1L, 3L, "33%")]
    [InlineData(999L, 1000L, "99%")]
    [InlineData(5L, 5L, "100%")]
    [InlineData(7L, 5L, "100%")]
    public void Percent_RoundsDownAndCaps(long part, long total, string expected)
    {
        Assert.Equal(expected, TextFormat.Percent(part, total));
    }

    [Theory]
    [InlineData(0, "0:00:00")]
    [InlineData(83, "0:01:23")]
    [InlineData(3600 * 26 + 61, "26:01:01")]
    [InlineData(-5, "0:00:00")]
    public void Duration_IsHoursMinutesSeconds(int seconds, string expected)
    {
        Assert.Equal(expected, TextFormat.Duration(TimeSpan.FromSeconds(seconds)));
    }
}
