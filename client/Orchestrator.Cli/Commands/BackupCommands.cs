using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Errors;
using Orchestrator.Cli.Infrastructure;
using Orchestrator.Cli.Output;
using Orchestrator.Cli.Views;

namespace Orchestrator.Cli.Commands;

/// <summary><c>orchestrator backup ...</c>: live backups of running VMs.</summary>
internal static class BackupCommands
{
    private static readonly string[] QuiesceModes = ["off", "try", "required"];

    public static Command Create(CliRuntime runtime) =>
        new("backup", "Live backups of VMs: start, follow, list and inspect runs; repair what a failed run left.")
        {
            CreateStart(runtime), CreateWatch(runtime), CreateList(runtime), CreateShow(runtime), CreateRepair(runtime), CreateTest(runtime), CreateVerify(runtime),
        };

    private static Command CreateStart(CliRuntime runtime)
    {
        Argument<VmKey> vm = ResourceKeys.VmKeyArgument("The VM to back up, as host/vm (e.g. kvm-01/web-1)");
        var target = new Option<string?>("--target")
        {
            Description = "Directory for the backup set, under a backup root of the host [default: the host's]",
            HelpName = "DIR",
        };
        target.Validators.Add(result =>
        {
            if (string.IsNullOrWhiteSpace(result.GetValueOrDefault<string?>()))
            {
                result.AddError("--target: the directory is empty");
            }
        });
        var quiesce = new Option<string?>("--quiesce")
        {
            Description = "Freeze guest file systems through the guest agent: off, try (go on without), required (fail without) [default: off]",
            HelpName = "off|try|required",
        };
        quiesce.AcceptOnlyFromAmong(QuiesceModes);
        var noVerify = new Option<bool>("--no-verify")
        {
            Description = "Skip qemu-img check and the checksum re-read of the copies",
        };
        var bandwidth = new Option<long>("--bandwidth")
        {
            Description = "Copy at most this many bytes per second; suffix K, M or G for KiB, MiB, GiB (e.g. 50M) [default: no limit]",
            HelpName = "RATE",
            CustomParser = ParseBandwidth,
        };
        Option<int> keepLast = KeepOption("--keep-last", "Retention: keep the newest N backups of the VM");
        Option<int> keepDaily = KeepOption("--keep-daily", "Retention: keep the newest backup of each of the last N days");
        Option<int> keepWeekly = KeepOption("--keep-weekly", "Retention: keep the newest backup of each of the last N weeks");
        Option<int> keepMonthly = KeepOption("--keep-monthly", "Retention: keep the newest backup of each of the last N months");
        var incremental = new Option<bool>("--incremental")
        {
            Description = "Back up with a libvirt backup job and checkpoints: only what changed since the last such backup "
                + "when a valid chain exists, otherwise a full (the run's level_reason says why)",
        };
        var wait = new Option<bool>("--wait")
        {
            Description = $"Follow the run until it ends and print the ended run; exit {ExitCodes.RunFailed} if it failed",
        };

        var start = new Command("start", "Start a live backup of a running VM and print the admitted run. "
            + "Retention options apply once the run completes.")
        {
            vm, target, quiesce, noVerify, bandwidth, keepLast, keepDaily, keepWeekly, keepMonthly, incremental, wait,
        };
        Option<int>[] keeps = [keepLast, keepDaily, keepWeekly, keepMonthly];
        start.Validators.Add(result =>
        {
            // The server prunes every completed backup outside the kept set, the new one included: counts
            // that are all 0 would delete them all. Refused here rather than trusted to a typo.
            // Read from the tokens: a count that does not parse has its own error, and GetValue would throw.
            string[] given = [.. keeps.Select(result.GetResult).OfType<OptionResult>()
                .Where(o => !o.Implicit)
                .Select(o => o.Tokens.Count > 0 ? o.Tokens[0].Value : "")];
            if (given.Length > 0 && given.All(text => int.TryParse(text, CultureInfo.InvariantCulture, out int count) && count == 0))
            {
                result.AddError("--keep-last/--keep-daily/--keep-weekly/--keep-monthly: every count is 0, which would "
                    + "delete every backup of the VM, this one included; give at least one count of 1 or more");
            }
        });
        runtime.SetAction(start, async (parseResult, context, cancellationToken) =>
        {
            var request = new StartBackupRequest
            {
                Vm = parseResult.GetRequiredValue(vm).ToString(),
                Target = parseResult.GetValue(target) ?? "",
                Quiesce = parseResult.GetValue(quiesce) switch
                {
                    "off" => QuiesceMode.Off,
                    "try" => QuiesceMode.Try,
                    "required" => QuiesceMode.Required,
                    _ => QuiesceMode.Unspecified,
                },
                SkipVerify = parseResult.GetValue(noVerify),
                BandwidthBytesPerSecond = parseResult.GetValue(bandwidth),
                Incremental = parseResult.GetValue(incremental),
            };
            if (keeps.Any(option => parseResult.GetResult(option) is { Implicit: false }))
            {
                // Sent only when asked for: no retention message means "delete nothing".
                request.Retention = new Retention
                {
                    KeepLast = parseResult.GetValue(keepLast),
                    KeepDaily = parseResult.GetValue(keepDaily),
                    KeepWeekly = parseResult.GetValue(keepWeekly),
                    KeepMonthly = parseResult.GetValue(keepMonthly),
                };
            }

            var client = new BackupService.BackupServiceClient(context.CallInvoker);
            StartBackupResponse response = await client.StartBackupAsync(request, context.CallOptions(cancellationToken));
            BackupRun run = response.Run
                ?? throw new CliException(ExitCodes.Internal, $"the server answered without a run for {request.Vm}");
            if (!parseResult.GetValue(wait))
            {
                context.Render(BackupRunView.From(run), CliJsonContext.Output.BackupRunView, BackupRunView.WriteDetails);
                return;
            }

            if (!ResourceKeys.TryParseRunKey(run.Key, out RunKey key, out _))
            {
                throw new CliException(ExitCodes.Internal, $"the server admitted a run with a malformed key '{run.Key}'");
            }

            context.Error.WriteLine($"backup {key} admitted; waiting for it to end");
            string lastStep = EnumNames.Of(run.Step);
            BackupRun ended = await BackupFollower.FollowAsync(
                context,
                key,
                update =>
                {
                    string step = EnumNames.Of(update.Step);
                    if (step != lastStep)
                    {
                        context.Error.WriteLine($"backup {key}: {step}{(update.RollingBack ? " (rolling back)" : "")}");
                        lastStep = step;
                    }
                },
                onTick: null,
                cancellationToken);
            context.Render(BackupRunView.From(ended), CliJsonContext.Output.BackupRunView, BackupRunView.WriteDetails);
            BackupFollower.ThrowIfFailed(ended);
        });
        return start;
    }

    private static Command CreateWatch(CliRuntime runtime)
    {
        Argument<RunKey> key = ResourceKeys.RunKeyArgument($"The run, as host/vm/run (e.g. {ResourceKeys.RunKeyExample})");
        var watch = new Command("watch", "Follow a run until it ends: a live view on a terminal; otherwise one line "
            + $"per update (table) or one JSON object per line (json). Exit {ExitCodes.RunFailed} if the run failed.")
        {
            key,
        };
        runtime.SetAction(watch, async (parseResult, context, cancellationToken) =>
        {
            RunKey runKey = parseResult.GetRequiredValue(key);
            BackupRun ended;
            if (context.Settings.Format == OutputFormat.Json)
            {
                ended = await BackupFollower.FollowAsync(
                    context,
                    runKey,
                    run => JsonOutput.Write(context.Out, BackupRunView.From(run), CliJsonContext.Compact.BackupRunView),
                    onTick: null,
                    cancellationToken);
            }
            else if (context.Interactive)
            {
                var live = new LiveFrame(context.Out, context.TerminalWidth);
                void Draw(BackupRun run) =>
                    live.Draw(BackupProgressView.Frame(BackupRunView.From(run), context.Clock.GetUtcNow().UtcDateTime, context.Color));
                ended = await BackupFollower.FollowAsync(context, runKey, Draw, Draw, cancellationToken);
            }
            else
            {
                ended = await BackupFollower.FollowAsync(
                    context,
                    runKey,
                    run =>
                    {
                        context.Out.WriteLine(BackupProgressView.Line(BackupRunView.From(run), context.Clock.GetUtcNow().UtcDateTime));
                        context.Out.Flush();
                    },
                    onTick: null,
                    cancellationToken);
            }

            BackupFollower.ThrowIfFailed(ended);
        });
        return watch;
    }

    private static Command CreateList(CliRuntime runtime)
    {
        var vm = new Option<string?>("--vm")
        {
            Description = "Only the runs of this VM, as host/vm",
            HelpName = ResourceKeys.VmKeyName,
        };
        vm.Validators.Add(result =>
        {
            if (!ResourceKeys.TryParseVmKey(result.GetValueOrDefault<string?>() ?? "", out _, out string error))
            {
                result.AddError(error.Replace($"argument {ResourceKeys.VmKeyName}", "--vm", StringComparison.Ordinal));
            }
        });
        var host = new Option<string?>("--host")
        {
            Description = "Only the runs of this host's VMs",
            HelpName = "HOST",
        };
        host.Validators.Add(result =>
        {
            if (!ResourceKeys.TryParseHostName(result.GetValueOrDefault<string?>() ?? "", "--host", out string error))
            {
                result.AddError(error);
            }
        });

        var list = new Command("list", "List backup runs, newest first: of the whole fleet, one host, or one VM. "
            + "Hosts whose silo is down are named in a warning on stderr.")
        {
            vm, host,
        };
        list.Validators.Add(result =>
        {
            if (result.GetResult(vm) is not null && result.GetResult(host) is not null)
            {
                result.AddError("--vm and --host: give one or the other, not both");
            }
        });
        runtime.SetAction(list, async (parseResult, context, cancellationToken) =>
        {
            string hostName = parseResult.GetValue(host) ?? "";
            var client = new BackupService.BackupServiceClient(context.CallInvoker);
            ListBackupsResponse response = await client.ListBackupsAsync(
                new ListBackupsRequest { Vm = parseResult.GetValue(vm) ?? "", Host = hostName },
                context.CallOptions(cancellationToken));
            context.ReportUnavailableHosts(response.UnavailableHosts, hostName, "backups");

            context.Render(BackupRunView.FromList(response.Runs), CliJsonContext.Output.IReadOnlyListBackupRunView, BackupRunView.WriteTable);
        });
        return list;
    }

    private static Command CreateShow(CliRuntime runtime)
    {
        Argument<RunKey> key = ResourceKeys.RunKeyArgument($"The run, as host/vm/run (e.g. {ResourceKeys.RunKeyExample})");
        var show = new Command("show", "Show one run: step, times, disks with progress and checksums, and the steps it went through.")
        {
            key,
        };
        runtime.SetAction(show, async (parseResult, context, cancellationToken) =>
        {
            RunKey runKey = parseResult.GetRequiredValue(key);
            var client = new BackupService.BackupServiceClient(context.CallInvoker);
            GetBackupResponse response = await client.GetBackupAsync(
                new GetBackupRequest { Key = runKey.ToString() }, context.CallOptions(cancellationToken));
            BackupRun run = response.Run ?? throw new CliException(ExitCodes.Internal, $"the server answered without a run for {runKey}");
            context.Render(BackupRunView.From(run), CliJsonContext.Output.BackupRunView, BackupRunView.WriteDetails);
        });
        return show;
    }

    private static Command CreateTest(CliRuntime runtime)
    {
        Argument<RunKey> key = ResourceKeys.RunKeyArgument($"The completed run to test, as host/vm/run (e.g. {ResourceKeys.RunKeyExample})");
        var host = new Option<string?>("--host")
        {
            Description = "Host to restore and boot on (any host of the cluster whose backup roots hold the set); default: "
                + "one chosen by capacity (free memory and CPU, test restores running), the run's own host on a tie",
            HelpName = "HOST",
        };
        var probe = new Option<string>("--probe")
        {
            Description = "How the booted guest proves it works: agent (guest agent ping, the default), console:REGEX "
                + "(a serial console line matches), command:CMD (run with /bin/sh -c through the agent; exit 0 passes)",
            HelpName = "agent|console:REGEX|command:CMD",
            DefaultValueFactory = _ => "agent",
        };
        probe.Validators.Add(result =>
        {
            string value = result.GetValueOrDefault<string?>() ?? "";
            if (!(value == "agent" || (value.StartsWith("console:", StringComparison.Ordinal) && value.Length > 8) || (value.StartsWith("command:", StringComparison.Ordinal) && value.Length > 8)))
            {
                result.AddError($"--probe: '{value}' is not agent, console:REGEX or command:CMD");
            }
        });
        var noWait = new Option<bool>("--no-wait")
        {
            Description = "Print the admitted test and return; the result appears in backup show and vm show",
        };
        var test = new Command("test", "Test restore: verify a completed backup set (manifest checksums), restore it into a "
            + "throwaway VM with no network on --host or a host with capacity, boot it, run the probe, and always destroy the VM and delete "
            + $"its images. --timeout bounds restore, boot and probe together (default {DefaultTestTimeoutSeconds} s here). "
            + $"Exit {ExitCodes.RunFailed} when the test failed.")
        {
            key, host, probe, noWait,
        };
        runtime.SetAction(test, async (parseResult, context, cancellationToken) =>
        {
            // The global --timeout is the test's own bound here; the call waits for it plus the clean-up.
            bool explicitTimeout = parseResult.GetResult(runtime.Globals.Timeout) is { Implicit: false };
            TimeSpan timeout = explicitTimeout ? context.Settings.Timeout : TimeSpan.FromSeconds(DefaultTestTimeoutSeconds);
            var client = new BackupService.BackupServiceClient(context.CallInvoker);
            TestBackupResponse response = await client.TestBackupAsync(
                new TestBackupRequest
                {
                    Key = parseResult.GetRequiredValue(key).ToString(),
                    Host = parseResult.GetValue(host) ?? "",
                    Probe = parseResult.GetValue(probe) ?? "agent",
                    Timeout = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(timeout),
                    NoWait = parseResult.GetValue(noWait),
                },
                new Grpc.Core.CallOptions(deadline: DateTime.UtcNow.Add(timeout).AddMinutes(4), cancellationToken: cancellationToken));
            TestRestoreView view = TestRestoreView.From(response.Test) ?? throw new CliException(ExitCodes.Internal, "the server answered without a test");
            context.Render(view, CliJsonContext.Output.TestRestoreView, TestRestoreView.WriteDetails);
            if (view.Outcome == "failed")
            {
                throw new CliException(ExitCodes.RunFailed, $"test restore of {view.Key} failed: {view.Reason}");
            }
        });
        return test;
    }

    private const int DefaultTestTimeoutSeconds = 300;

    private static Command CreateVerify(CliRuntime runtime)
    {
        Argument<RunKey> key = ResourceKeys.RunKeyArgument($"The run whose set to verify, as host/vm/run (e.g. {ResourceKeys.RunKeyExample})");
        var host = new Option<string?>("--host")
        {
            Description = "Host whose backup roots are read (its silo must be up); default: the run's own host",
            HelpName = "HOST",
        };
        var verify = new Command("verify", "Verify a backup set and, for an incremental, every set it builds on down to its full: "
            + "each manifest, the SHA-256 of every image, each qcow2 header's backing (exactly the parent set's image, or none) "
            + $"and the chain's links. Writes nothing. Prints per set what passed; exit {ExitCodes.RunFailed} when a set failed.")
        {
            key, host,
        };
        runtime.SetAction(verify, async (parseResult, context, cancellationToken) =>
        {
            var client = new BackupService.BackupServiceClient(context.CallInvoker);
            VerifyBackupResponse response = await client.VerifyBackupAsync(
                new VerifyBackupRequest { Key = parseResult.GetRequiredValue(key).ToString(), Host = parseResult.GetValue(host) ?? "" },
                context.CallOptions(cancellationToken));
            VerifyView view = VerifyView.From(response);
            context.Render(view, CliJsonContext.Output.VerifyView, VerifyView.WriteDetails);
            if (!view.Passed)
            {
                throw new CliException(ExitCodes.RunFailed, $"backup set {view.Sets.LastOrDefault(s => !s.Passed)?.Run ?? view.Key} failed verification: {view.Sets.LastOrDefault(s => !s.Passed)?.Error}");
            }
        });
        return verify;
    }

    private static Command CreateRepair(CliRuntime runtime)
    {
        Argument<VmKey> vm = ResourceKeys.VmKeyArgument("The VM, as host/vm (e.g. kvm-01/web-1)");
        var dryRun = new Option<bool>("--dry-run")
        {
            Description = "Only show what would be committed and what is refused; change nothing",
        };
        var repair = new Command("repair", "Commit back the backup overlays a run left in place when it gave up on its commit "
            + "(fix what blocked the commit first: see the run's error). Only overlays one of the VM's own runs recorded are "
            + "committed, into exactly the base and chain that run recorded; any other is refused and left as it is "
            + "(exit code 6). The answer comes once every commit is done: raise --timeout for big overlays.")
        {
            vm, dryRun,
        };
        runtime.SetAction(repair, async (parseResult, context, cancellationToken) =>
        {
            VmKey vmKey = parseResult.GetRequiredValue(vm);
            bool dry = parseResult.GetValue(dryRun);
            var client = new BackupService.BackupServiceClient(context.CallInvoker);
            RepairOverlaysResponse response = await client.RepairOverlaysAsync(
                new RepairOverlaysRequest { Vm = vmKey.ToString(), DryRun = dry }, context.CallOptions(cancellationToken));
            var view = OverlayRepairView.From(vmKey.ToString(), dry, response);
            context.Render(view, CliJsonContext.Output.OverlayRepairView, OverlayRepairView.WriteDetails);
            if (view.Disks.Where(d => d.Action == "refused").Select(d => d.Target).ToList() is { Count: > 0 } refused)
            {
                throw new CliException(ExitCodes.FailedPrecondition, $"refused for {string.Join(", ", refused)}: see the reason of each; nothing was done to them");
            }
        });
        return repair;
    }

    /// <summary>A retention count: a whole number, 0 or more (0 turns that rule off).</summary>
    private static Option<int> KeepOption(string name, string description) => new(name)
    {
        Description = description,
        HelpName = "N",
        CustomParser = result =>
        {
            string text = result.Tokens.Count > 0 ? result.Tokens[0].Value : "";
            if (int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int count) && count >= 0)
            {
                return count;
            }

            result.AddError(count < 0
                ? $"{name}: '{text}' is negative; give a count of 0 or more"
                : $"{name}: '{text}' is not a whole number of backups (0 or more)");
            return 0;
        },
    };

    private static long ParseBandwidth(ArgumentResult result)
    {
        string text = result.Tokens.Count > 0 ? result.Tokens[0].Value : "";
        if (ByteRate.TryParse(text, "--bandwidth", out long bytesPerSecond, out string error))
        {
            return bytesPerSecond;
        }

        result.AddError(error);
        return 0;
    }
}
