using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using Google.Protobuf.WellKnownTypes;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Errors;
using Orchestrator.Cli.Infrastructure;
using Orchestrator.Cli.Output;
using Orchestrator.Cli.Views;

namespace Orchestrator.Cli.Commands;

/// <summary><c>orchestrator checkpoint ...</c>: internal (qcow2) checkpoints of VMs and their schedules.</summary>
internal static class CheckpointCommands
{
    public static Command Create(CliRuntime runtime) =>
        new("checkpoint", "Internal (qcow2) checkpoints of VMs: disk + memory of a running VM, disk only of a shut-off one.")
        {
            CreateCreate(runtime),
            CreateList(runtime),
            CreateRevert(runtime),
            CreateDelete(runtime),
            CreateSchedule(runtime),
        };

    private static Command CreateCreate(CliRuntime runtime)
    {
        Argument<VmKey> key = ResourceKeys.VmKeyArgument("The VM, as host/vm (e.g. kvm-01/web-1)");
        var name = new Option<string?>("--name")
        {
            Description = "Checkpoint name (letters, digits, '.', '_', '-'); default cp-yyyyMMdd-HHmmss (UTC)",
            HelpName = "NAME",
        };
        var create = new Command("create", "Take a checkpoint. A running VM is paused while its memory is saved; the pause is measured and shown.") { key, name };
        runtime.SetAction(create, async (parseResult, context, cancellationToken) =>
        {
            VmKey vmKey = parseResult.GetRequiredValue(key);
            var client = new CheckpointService.CheckpointServiceClient(context.CallInvoker);
            CreateCheckpointResponse response = await client.CreateCheckpointAsync(
                new CreateCheckpointRequest { Key = vmKey.ToString(), Name = parseResult.GetValue(name) ?? "" },
                context.CallOptions(cancellationToken));
            Checkpoint checkpoint = response.Checkpoint ?? throw new CliException(ExitCodes.Internal, $"the server answered without a checkpoint for {vmKey}");
            context.Render(CheckpointView.From(vmKey.ToString(), checkpoint), CliJsonContext.Output.CheckpointView, CheckpointView.WriteDetails);
        });
        return create;
    }

    private static Command CreateList(CliRuntime runtime)
    {
        Argument<VmKey> key = ResourceKeys.VmKeyArgument("The VM, as host/vm");
        var list = new Command("list", "List a VM's checkpoints, oldest first: size of the saved memory, the VM's pause, who made it.") { key };
        runtime.SetAction(list, async (parseResult, context, cancellationToken) =>
        {
            VmKey vmKey = parseResult.GetRequiredValue(key);
            var client = new CheckpointService.CheckpointServiceClient(context.CallInvoker);
            ListCheckpointsResponse response = await client.ListCheckpointsAsync(
                new ListCheckpointsRequest { Key = vmKey.ToString() }, context.CallOptions(cancellationToken));
            context.Render(CheckpointView.FromList(vmKey.ToString(), response.Checkpoints), CliJsonContext.Output.IReadOnlyListCheckpointView, CheckpointView.WriteTable);
        });
        return list;
    }

    private static Command CreateRevert(CliRuntime runtime)
    {
        Argument<VmKey> key = ResourceKeys.VmKeyArgument("The VM, as host/vm");
        Argument<string> name = NameArgument();
        var paused = new Option<bool>("--paused") { Description = "Leave the VM paused at the checkpoint" };
        var running = new Option<bool>("--running") { Description = "Leave the VM running (the default for a checkpoint with memory; starts a disk-only one)" };
        var revert = new Command("revert", "Revert a VM to a checkpoint. By default a checkpoint with memory resumes running and a disk-only one stays shut off.")
        {
            key,
            name,
            paused,
            running,
        };
        revert.Validators.Add(result =>
        {
            if (result.GetValue(paused) && result.GetValue(running))
            {
                result.AddError("--paused and --running cannot be used together");
            }
        });
        runtime.SetAction(revert, async (parseResult, context, cancellationToken) =>
        {
            VmKey vmKey = parseResult.GetRequiredValue(key);
            var target = parseResult.GetValue(paused) ? RevertTarget.Paused : parseResult.GetValue(running) ? RevertTarget.Running : RevertTarget.Unspecified;
            var client = new CheckpointService.CheckpointServiceClient(context.CallInvoker);
            RevertCheckpointResponse response = await client.RevertCheckpointAsync(
                new RevertCheckpointRequest { Key = vmKey.ToString(), Name = parseResult.GetRequiredValue(name), Target = target },
                context.CallOptions(cancellationToken));
            context.Render(CheckpointRevertView.From(vmKey.ToString(), response), CliJsonContext.Output.CheckpointRevertView, CheckpointRevertView.WriteDetails);
        });
        return revert;
    }

    private static Command CreateDelete(CliRuntime runtime)
    {
        Argument<VmKey> key = ResourceKeys.VmKeyArgument("The VM, as host/vm");
        Argument<string> name = NameArgument();
        var delete = new Command("delete", "Delete a checkpoint (its saved memory and disk state).") { key, name };
        runtime.SetAction(delete, async (parseResult, context, cancellationToken) =>
        {
            VmKey vmKey = parseResult.GetRequiredValue(key);
            string checkpoint = parseResult.GetRequiredValue(name);
            var client = new CheckpointService.CheckpointServiceClient(context.CallInvoker);
            await client.DeleteCheckpointAsync(new DeleteCheckpointRequest { Key = vmKey.ToString(), Name = checkpoint }, context.CallOptions(cancellationToken));
            context.Render(new CheckpointDeletedView(vmKey.ToString(), checkpoint, true), CliJsonContext.Output.CheckpointDeletedView, CheckpointDeletedView.WriteText);
        });
        return delete;
    }

    private static Command CreateSchedule(CliRuntime runtime) =>
        new("schedule", "Cron schedules of checkpoints, with retention.") { CreateScheduleSet(runtime), CreateScheduleShow(runtime), CreateScheduleDelete(runtime) };

    private static Command CreateScheduleSet(CliRuntime runtime)
    {
        Argument<VmKey> key = ResourceKeys.VmKeyArgument("The VM, as host/vm");
        var cron = new Option<string>("--cron")
        {
            Description = "When: 5 cron fields (minute hour day-of-month month day-of-week), 6 with seconds first, or @hourly/@daily/...",
            HelpName = "EXPR",
            Required = true,
        };
        var zone = new Option<string?>("--tz")
        {
            Description = "IANA time zone the cron expression and the retention buckets are read in [default: UTC]",
            HelpName = "ZONE",
        };
        var jitter = new Option<TimeSpan?>("--jitter")
        {
            Description = "Spread: each VM runs at its own fixed offset within [0, jitter], e.g. 90s, 5m, 1h",
            HelpName = "DURATION",
            CustomParser = ParseJitter,
        };
        var keepLast = KeepOption("--keep-last", "Keep the newest N scheduled checkpoints");
        var hourly = KeepOption("--keep-hourly", "Keep the newest checkpoint of each of the newest N hours");
        var daily = KeepOption("--keep-daily", "Keep the newest checkpoint of each of the newest N days");
        var weekly = KeepOption("--keep-weekly", "Keep the newest checkpoint of each of the newest N ISO weeks");
        var monthly = KeepOption("--keep-monthly", "Keep the newest checkpoint of each of the newest N months");
        var set = new Command("set", "Set (or replace) a VM's checkpoint schedule. After each scheduled checkpoint, retention prunes the scheduled ones it no longer keeps; manual checkpoints are never pruned.")
        {
            key,
            cron,
            zone,
            jitter,
            keepLast,
            hourly,
            daily,
            weekly,
            monthly,
        };
        runtime.SetAction(set, async (parseResult, context, cancellationToken) =>
        {
            VmKey vmKey = parseResult.GetRequiredValue(key);
            var request = new SetCheckpointScheduleRequest
            {
                Key = vmKey.ToString(),
                Schedule = new CheckpointSchedule { Cron = parseResult.GetRequiredValue(cron), TimeZone = parseResult.GetValue(zone) ?? "" },
                Retention = new RetentionPolicy
                {
                    KeepLast = parseResult.GetValue(keepLast),
                    Hourly = parseResult.GetValue(hourly),
                    Daily = parseResult.GetValue(daily),
                    Weekly = parseResult.GetValue(weekly),
                    Monthly = parseResult.GetValue(monthly),
                },
            };
            if (parseResult.GetValue(jitter) is { } spread)
            {
                request.Schedule.Jitter = Duration.FromTimeSpan(spread);
            }

            var client = new CheckpointService.CheckpointServiceClient(context.CallInvoker);
            SetCheckpointScheduleResponse response = await client.SetCheckpointScheduleAsync(request, context.CallOptions(cancellationToken));
            CheckpointScheduleStatus status = response.Schedule ?? throw new CliException(ExitCodes.Internal, $"the server answered without a schedule for {vmKey}");
            context.Render(CheckpointScheduleView.From(status), CliJsonContext.Output.CheckpointScheduleView, CheckpointScheduleView.WriteDetails);
        });
        return set;
    }

    private static Command CreateScheduleShow(CliRuntime runtime)
    {
        var key = new Argument<VmKey?>(ResourceKeys.VmKeyName)
        {
            Description = "One VM, as host/vm; without it, every VM's schedule",
            Arity = ArgumentArity.ZeroOrOne,
            CustomParser = result =>
            {
                if (result.Tokens.Count == 0)
                {
                    return null;
                }

                if (!ResourceKeys.TryParseVmKey(result.Tokens[0].Value, out VmKey parsed, out string error))
                {
                    result.AddError(error);
                    return null;
                }

                return parsed;
            },
        };
        var host = new Option<string?>("--host") { Description = "Only the VMs of this host (without HOST/VM)", HelpName = "HOST" };
        host.Validators.Add(result =>
        {
            if (!ResourceKeys.TryParseHostName(result.GetValueOrDefault<string?>() ?? "", "--host", out string error))
            {
                result.AddError(error);
            }
        });
        var show = new Command("show", "Show one VM's checkpoint schedule (next due time, last run, the checkpoints it keeps), or list every VM's.") { key, host };
        show.Validators.Add(result =>
        {
            if (result.GetResult(key) is { Tokens.Count: > 0 } && result.GetResult(host) is not null)
            {
                result.AddError("give either HOST/VM or --host, not both");
            }
        });
        runtime.SetAction(show, async (parseResult, context, cancellationToken) =>
        {
            var client = new CheckpointService.CheckpointServiceClient(context.CallInvoker);
            if (parseResult.GetValue(key) is { } vmKey)
            {
                GetCheckpointScheduleResponse one = await client.GetCheckpointScheduleAsync(
                    new GetCheckpointScheduleRequest { Key = vmKey.ToString() }, context.CallOptions(cancellationToken));
                CheckpointScheduleStatus status = one.Schedule ?? throw new CliException(ExitCodes.Internal, $"the server answered without a schedule for {vmKey}");
                context.Render(CheckpointScheduleView.From(status), CliJsonContext.Output.CheckpointScheduleView, CheckpointScheduleView.WriteDetails);
                return;
            }

            string hostName = parseResult.GetValue(host) ?? "";
            ListCheckpointSchedulesResponse all = await client.ListCheckpointSchedulesAsync(
                new ListCheckpointSchedulesRequest { Host = hostName }, context.CallOptions(cancellationToken));
            context.ReportUnavailableHosts(all.UnavailableHosts, hostName, "schedules");

            context.Render(CheckpointScheduleView.FromList(all.Schedules), CliJsonContext.Output.IReadOnlyListCheckpointScheduleView, CheckpointScheduleView.WriteTable);
        });
        return show;
    }

    private static Command CreateScheduleDelete(CliRuntime runtime)
    {
        Argument<VmKey> key = ResourceKeys.VmKeyArgument("The VM, as host/vm");
        var delete = new Command("delete", "Remove a VM's checkpoint schedule; the checkpoints it took stay.") { key };
        runtime.SetAction(delete, async (parseResult, context, cancellationToken) =>
        {
            VmKey vmKey = parseResult.GetRequiredValue(key);
            var client = new CheckpointService.CheckpointServiceClient(context.CallInvoker);
            DeleteCheckpointScheduleResponse response = await client.DeleteCheckpointScheduleAsync(
                new DeleteCheckpointScheduleRequest { Key = vmKey.ToString() }, context.CallOptions(cancellationToken));
            context.Render(new CheckpointDeletedView(vmKey.ToString(), null, response.Deleted), CliJsonContext.Output.CheckpointDeletedView, CheckpointDeletedView.WriteText);
        });
        return delete;
    }

    private static Argument<string> NameArgument() => new("NAME") { Description = "The checkpoint's name" };

    /// <summary>A retention count. Not checked here: the server names the field (retention.keep_last...) in its error.</summary>
    private static Option<int> KeepOption(string name, string description) => new(name) { Description = description, HelpName = "N" };

    /// <summary>"90" (seconds), "90s", "5m", "1h", "1h30m", "500ms".</summary>
    internal static TimeSpan? ParseJitter(ArgumentResult result)
    {
        string text = result.Tokens.Count > 0 ? result.Tokens[0].Value.Trim() : "";
        if (DurationText.TryParse(text, out TimeSpan value))
        {
            return value;
        }

        result.AddError($"--jitter: '{text}' is not a duration (e.g. 90s, 5m, 1h, 1h30m)");
        return null;
    }
}
