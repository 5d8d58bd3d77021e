using Orchestrator.Cli.Infrastructure;
using Orchestrator.Cli.Tests.Fakes;

namespace Orchestrator.Cli.Tests;

/// <summary>Bad backup and restore command lines: exit code 2, an "error:" line naming the culprit, no call.</summary>
public sealed class BackupUsageTests
{
    private static async Task<CliRun> AssertUsageErrorAsync(string expectedStart, params string[] args)
    {
        var invoker = new FakeCallInvoker();

        CliRun run = await CliRun.RunAsync(invoker, args);

        Assert.Equal(ExitCodes.Usage, run.ExitCode);
        Assert.StartsWith(expectedStart, run.Stderr, StringComparison.Ordinal);
        Assert.Contains("--help' for usage.", run.Stderr, StringComparison.Ordinal);
        Assert.Empty(run.Stdout);
        Assert.Empty(run.Connections);
        Assert.Empty(invoker.Calls);
        return run;
    }

    [Theory]
    [InlineData("backup", "show")]
    [InlineData("backup", "watch")]
    [InlineData("restore", "--as", "copy")]
    public async Task RunKeyCommands_MalformedKey_NameTheArgument(params string[] command)
    {
        foreach (string key in new[] { "kvm-01/web-1", "kvm-01/web-1/b-1/x", "kvm-01//b-1", "kvm-01/web-1/" })
        {
            CliRun run = await AssertUsageErrorAsync("error: argument HOST/VM/RUN:", [.. command, key]);
            Assert.Contains("exactly 3 non-empty parts", run.Stderr, StringComparison.Ordinal);
        }
    }

    [Theory]
    [InlineData("kvm-01/web-1/vda")]
    [InlineData("kvm-01/web-1/b_1")]
    [InlineData("kvm-01/web-1/B-1")]
    [InlineData("kvm-01/web-1/b-20261126 210000")]
    public async Task BackupShow_RunIdNotAServerRunId_NamesTheArgument(string key)
    {
        CliRun run = await AssertUsageErrorAsync("error: argument HOST/VM/RUN:", "backup", "show", key);

        Assert.Contains("is not a backup run id", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task BackupShow_RunIdLongerThanTheServerAllows_IsRefused()
    {
        await AssertUsageErrorAsync("error: argument HOST/VM/RUN:", "backup", "show", "kvm-01/web-1/b-" + new string('a', 63));
    }

    [Theory]
    [InlineData("", "error: --as: the VM name is empty")]
    [InlineData("  ", "error: --as: the VM name is empty")]
    [InlineData("kvm-01/copy", "error: --as: 'kvm-01/copy' is not a VM name")]
    [InlineData(" copy", "error: --as: ' copy' is not a VM name")]
    public async Task Restore_BadName_NamesTheOption(string name, string expectedStart)
    {
        await AssertUsageErrorAsync(expectedStart, "restore", Samples.RunKey, "--as", name);
    }

    [Fact]
    public async Task Restore_WithoutAs_IsAUsageError()
    {
        CliRun run = await AssertUsageErrorAsync("error: ", "restore", Samples.RunKey);

        Assert.Contains("--as", run.Stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--keep-last")]
    [InlineData("--keep-daily")]
    [InlineData("--keep-weekly")]
    [InlineData("--keep-monthly")]
    public async Task Start_NegativeKeepCount_NamesTheOption(string option)
    {
        await AssertUsageErrorAsync($"error: {option}: '-1' is negative", "backup", "start", "kvm-01/web-1", option, "-1");
    }

    [Theory]
    [InlineData("-5")]
    [InlineData("50X")]
    [InlineData("1.5G")]
    [InlineData("M")]
    [InlineData("")]
    [InlineData("fast")]
    [InlineData("99999999999G")]
    public async Task Start_BadBandwidth_NamesTheOption(string rate)
    {
        await AssertUsageErrorAsync($"error: --bandwidth: '{rate}' is not a rate in bytes per second", "backup", "start", "kvm-01/web-1", "--bandwidth", rate);
    }

    [Fact]
    public async Task Start_EveryKeepCountZero_IsRefusedBecauseItWouldDeleteEveryBackup()
    {
        CliRun run = await AssertUsageErrorAsync("error: --keep-last/", "backup", "start", "kvm-01/web-1", "--keep-last", "0");

        Assert.Contains("would delete every backup of the VM", run.Stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("backup", "start", "kvm-01")]
    [InlineData("backup", "start", "kvm-01/web-1", "--quiesce", "maybe")]
    [InlineData("backup", "start", "kvm-01/web-1", "--target", "")]
    [InlineData("backup", "start", "kvm-01/web-1", "--keep-last", "three")]
    [InlineData("backup", "list", "--vm", "kvm-01")]
    [InlineData("backup", "list", "--host", "kvm-01/web-1")]
    [InlineData("backup", "list", "--vm", "kvm-01/web-1", "--host", "kvm-01")]
    [InlineData("backup", "watch")]
    [InlineData("backup")]
    public async Task Backup_BadCommandLine_ExitsWithUsageErrorAndSendsNothing(params string[] args)
    {
        await AssertUsageErrorAsync("error: ", args);
    }

    [Fact]
    public async Task BackupList_MalformedVm_NamesTheOption()
    {
        await AssertUsageErrorAsync("error: --vm: 'kvm-01' must be exactly 2 non-empty parts", "backup", "list", "--vm", "kvm-01");
    }

    [Theory]
    [InlineData("0", 0L)]
    [InlineData("1048576", 1048576L)]
    [InlineData("512K", 512L * 1024)]
    [InlineData("512k", 512L * 1024)]
    [InlineData("50M", 50L * 1024 * 1024)]
    [InlineData("2G", 2L * 1024 * 1024 * 1024)]
    [InlineData("2g", 2L * 1024 * 1024 * 1024)]
    public void ByteRate_WholeNumberWithBinarySuffix_Parses(string text, long expected)
    {
        Assert.True(ByteRate.TryParse(text, "--bandwidth", out long bytesPerSecond, out string error));
        Assert.Equal(expected, bytesPerSecond);
        Assert.Empty(error);
    }

    [Theory]
    [InlineData("")]
    [InlineData("-1")]
    [InlineData("+1")]
    [InlineData(" 1")]
    [InlineData("1 M")]
    [InlineData("1.5M")]
    [InlineData("1,000")]
    [InlineData("1MB")]
    [InlineData("1T")]
    [InlineData("G")]
    [InlineData("9223372036854775807K")]
    public void ByteRate_Malformed_IsRefusedWithAMessageNamingTheOption(string text)
    {
        Assert.False(ByteRate.TryParse(text, "--bandwidth", out _, out string error));
        Assert.StartsWith($"--bandwidth: '{text}' is not a rate", error, StringComparison.Ordinal);
    }

    [Fact]
    public void ByteRate_LargestWholeGibibytes_DoesNotOverflow()
    {
        long max = long.MaxValue / (1L << 30);

        Assert.True(ByteRate.TryParse($"{max}G", "--bandwidth", out long bytesPerSecond, out _));
        Assert.Equal(max << 30, bytesPerSecond);
        Assert.False(ByteRate.TryParse($"{max + 1}G", "--bandwidth", out _, out _));
    }

    [Fact]
    public async Task Help_ListsBackupAndRestoreAndTheRunFailedExitCode()
    {
        CliRun run = await CliRun.RunAsync(new FakeCallInvoker(), "--help");

        Assert.Contains("backup", run.Stdout, StringComparison.Ordinal);
        Assert.Contains("restore", run.Stdout, StringComparison.Ordinal);
        Assert.Contains("  7  the backup run ended failed", run.Stdout, StringComparison.Ordinal);
    }
}
