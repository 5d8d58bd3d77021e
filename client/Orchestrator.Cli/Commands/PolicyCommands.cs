using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using Google.Rpc;
using Grpc.Core;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Errors;
using Orchestrator.Cli.Infrastructure;
using Orchestrator.Cli.Output;
using Orchestrator.Cli.Policies;
using Orchestrator.Cli.Views;

namespace Orchestrator.Cli.Commands;

/// <summary><c>orchestrator policy ...</c>: fleet-wide backup and checkpoint policies and their runs.</summary>
internal static class PolicyCommands
{
    /// <summary>What <c>-f -</c> is called in messages.</summary>
    public const string StdinName = "<stdin>";

    public const int MaxRunLimit = 1000;

    public static Command Create(CliRuntime runtime) =>
        new("policy", "Fleet-wide policies: which VMs to back up or checkpoint, when, and within which budgets; their runs.")
        {
            CreateApply(runtime),
            CreateList(runtime),
            CreateShow(runtime),
            CreateDelete(runtime),
            CreateRun(runtime),
            CreateWatch(runtime),
            CreateRuns(runtime),
        };

    private static Command CreateApply(CliRuntime runtime)
    {
        var file = new Option<string>("--file", "-f")
        {
            Description = "The policy file, YAML or JSON; - reads standard input",
            HelpName = "FILE",
            Required = true,
        };
        var apply = new Command("apply", "Create a policy from a file, or update it (a changed spec bumps its version). "
            + "Errors name the file, line and field; nothing is stored when any value is rejected.")
        {
            file,
        };
        runtime.SetAction(apply, async (parseResult, context, cancellationToken) =>
        {
            PolicyDocument document = Read(parseResult.GetRequiredValue(file), runtime.Environment);
            var client = new PolicyService.PolicyServiceClient(context.CallInvoker);
            ApplyPolicyResponse response;
            try
            {
                response = await client.ApplyPolicyAsync(new ApplyPolicyRequest { Spec = document.Spec }, context.CallOptions(cancellationToken));
            }
            catch (RpcException exception) when (exception.StatusCode == StatusCode.InvalidArgument && FieldErrors(exception, document) is { Count: > 0 } errors)
            {
                throw new CliException(ExitCodes.InvalidArgument, errors[0], [.. errors.Skip(1)]);
            }

            context.Render(PolicyApplyView.From(response), CliJsonContext.Output.PolicyApplyView, PolicyApplyView.WriteText);
        });
        return apply;
    }

    private static Command CreateList(CliRuntime runtime)
    {
        var list = new Command("list", "List every policy: kind, version, schedule, next and last run, RPO.");
        runtime.SetAction(list, async (parseResult, context, cancellationToken) =>
        {
            var client = new PolicyService.PolicyServiceClient(context.CallInvoker);
            ListPoliciesResponse response = await client.ListPoliciesAsync(new ListPoliciesRequest(), context.CallOptions(cancellationToken));
            context.Render(PolicyView.FromList(response.Policies), CliJsonContext.Output.IReadOnlyListPolicyView, PolicyView.WriteTable);
        });
        return list;
    }

    private static Command CreateShow(CliRuntime runtime)
    {
        Argument<string> name = NameArgument();
        var show = new Command("show", "Show one policy: its spec with every default filled in, version, next and last run, pending retries.") { name };
        runtime.SetAction(show, async (parseResult, context, cancellationToken) =>
        {
            string policy = parseResult.GetRequiredValue(name);
            var client = new PolicyService.PolicyServiceClient(context.CallInvoker);
            GetPolicyResponse response = await client.GetPolicyAsync(new GetPolicyRequest { Name = policy }, context.CallOptions(cancellationToken));
            Policy found = response.Policy ?? throw new CliException(ExitCodes.Internal, $"the server answered without a policy for {policy}");
            context.Render(PolicyView.From(found), CliJsonContext.Output.PolicyView, PolicyView.WriteDetails);
        });
        return show;
    }

    private static Command CreateDelete(CliRuntime runtime)
    {
        Argument<string> name = NameArgument();
        var delete = new Command("delete", "Delete a policy and its schedule; the backups and checkpoints it made stay. "
            + "Refused while a run of it is running.")
        {
            name,
        };
        runtime.SetAction(delete, async (parseResult, context, cancellationToken) =>
        {
            string policy = parseResult.GetRequiredValue(name);
            var client = new PolicyService.PolicyServiceClient(context.CallInvoker);
            DeletePolicyResponse response = await client.DeletePolicyAsync(new DeletePolicyRequest { Name = policy }, context.CallOptions(cancellationToken));
            context.Render(new PolicyDeletedView(policy, response.Deleted), CliJsonContext.Output.PolicyDeletedView, PolicyDeletedView.WriteText);
        });
        return delete;
    }

    private static Command CreateRun(CliRuntime runtime)
    {
        Argument<string> name = NameArgument();
        var watch = new Option<bool>("--watch")
        {
            Description = "Follow the run until it ends: a live view per VM on a terminal; exit "
                + $"{ExitCodes.RunFailed.ToString(CultureInfo.InvariantCulture)} unless it ends completed",
        };
        var run = new Command("run", "Run a policy now on every VM it selects, and print the admitted run "
            + "(with --watch, the ended run).")
        {
            name,
            watch,
        };
        runtime.SetAction(run, async (parseResult, context, cancellationToken) =>
        {
            string policy = parseResult.GetRequiredValue(name);
            var client = new PolicyService.PolicyServiceClient(context.CallInvoker);
            RunPolicyResponse response = await client.RunPolicyAsync(new RunPolicyRequest { Name = policy }, context.CallOptions(cancellationToken));
            PolicyRun admitted = response.Run ?? throw new CliException(ExitCodes.Internal, $"the server answered without a run for {policy}");
            if (!parseResult.GetValue(watch))
            {
                context.Render(PolicyRunView.From(admitted), CliJsonContext.Output.PolicyRunView, PolicyRunView.WriteDetails);
                return;
            }

            PolicyRunView ended;
            if (context.Settings.Format == OutputFormat.Table && context.Interactive)
            {
                ended = await FollowLiveAsync(context, policy, admitted.RunId, cancellationToken);
            }
            else
            {
                // Like backup start --wait: progress for people on stderr, the ended run alone on stdout.
                context.Error.WriteLine($"policy {policy}: run {admitted.RunId} admitted; waiting for it to end");
                PolicyRunView? previous = PolicyRunView.From(admitted);
                ended = await FollowAsync(
                    context,
                    policy,
                    admitted.RunId,
                    update =>
                    {
                        foreach (string line in PolicyRunProgressView.Changes(previous, update, Now(context)))
                        {
                            context.Error.WriteLine(line);
                        }

                        previous = update;
                    },
                    onTick: null,
                    cancellationToken);
                context.Render(ended, CliJsonContext.Output.PolicyRunView, PolicyRunView.WriteDetails);
            }

            ThrowUnlessCompleted(ended);
        });
        return run;
    }

    private static Command CreateWatch(CliRuntime runtime)
    {
        Argument<string> name = NameArgument();
        Argument<string> runId = RunIdArgument();
        var watch = new Command("watch", "Follow a policy run until it ends: a live view per VM on a terminal; otherwise one "
            + "line per change (table) or one JSON object per update (json). "
            + $"Exit {ExitCodes.RunFailed.ToString(CultureInfo.InvariantCulture)} unless it ends completed.")
        {
            name,
            runId,
        };
        runtime.SetAction(watch, async (parseResult, context, cancellationToken) =>
        {
            string policy = parseResult.GetRequiredValue(name);
            string run = parseResult.GetRequiredValue(runId);
            PolicyRunView ended;
            if (context.Settings.Format == OutputFormat.Json)
            {
                ended = await FollowAsync(
                    context,
                    policy,
                    run,
                    update => JsonOutput.Write(context.Out, update, CliJsonContext.Compact.PolicyRunView),
                    onTick: null,
                    cancellationToken);
            }
            else if (context.Interactive)
            {
                ended = await FollowLiveAsync(context, policy, run, cancellationToken);
            }
            else
            {
                PolicyRunView? previous = null;
                ended = await FollowAsync(
                    context,
                    policy,
                    run,
                    update =>
                    {
                        foreach (string line in PolicyRunProgressView.Changes(previous, update, Now(context)))
                        {
                            context.Out.WriteLine(line);
                        }

                        context.Out.Flush();
                        previous = update;
                    },
                    onTick: null,
                    cancellationToken);
            }

            ThrowUnlessCompleted(ended);
        });
        return watch;
    }

    private static Command CreateRuns(CliRuntime runtime)
    {
        Argument<string> name = NameArgument();
        var runId = new Argument<string?>("RUN_ID")
        {
            Description = "Show this run with every VM instead of listing runs",
            Arity = ArgumentArity.ZeroOrOne,
        };
        runId.Validators.Add(result =>
        {
            if (result.Tokens.Count > 0 && !TryParseRunId(result.Tokens[0].Value, out string error))
            {
                result.AddError(error);
            }
        });
        var limit = new Option<int?>("--limit")
        {
            Description = $"List at most N runs, 1-{MaxRunLimit.ToString(CultureInfo.InvariantCulture)} [default: the server's, 20]",
            HelpName = "N",
        };
        limit.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int?>() is { } n && n is < 1 or > MaxRunLimit)
            {
                result.AddError($"--limit: {n.ToString(CultureInfo.InvariantCulture)} is not between 1 and {MaxRunLimit.ToString(CultureInfo.InvariantCulture)}");
            }
        });
        var runs = new Command("runs", "List a policy's runs, newest first; with RUN_ID, show that run and every VM in it.")
        {
            name,
            runId,
            limit,
        };
        runs.Validators.Add(result =>
        {
            if (result.GetResult(runId) is { Tokens.Count: > 0 } && result.GetResult(limit) is { Implicit: false })
            {
                result.AddError("--limit lists runs; it does not go with RUN_ID");
            }
        });
        runtime.SetAction(runs, async (parseResult, context, cancellationToken) =>
        {
            string policy = parseResult.GetRequiredValue(name);
            var client = new PolicyService.PolicyServiceClient(context.CallInvoker);
            if (parseResult.GetValue(runId) is { } run)
            {
                GetPolicyRunResponse one = await client.GetPolicyRunAsync(
                    new GetPolicyRunRequest { Name = policy, RunId = run }, context.CallOptions(cancellationToken));
                PolicyRun found = one.Run ?? throw new CliException(ExitCodes.Internal, $"the server answered without a run for {policy} {run}");
                context.Render(PolicyRunView.From(found), CliJsonContext.Output.PolicyRunView, PolicyRunView.WriteDetails);
                return;
            }

            ListPolicyRunsResponse response = await client.ListPolicyRunsAsync(
                new ListPolicyRunsRequest { Name = policy, Limit = parseResult.GetValue(limit) ?? 0 }, context.CallOptions(cancellationToken));
            context.Render(PolicyRunView.FromList(response.Runs), CliJsonContext.Output.IReadOnlyListPolicyRunView, PolicyRunView.WriteTable);
        });
        return runs;
    }

    /// <summary>
    /// Reads and parses the policy file (<c>-</c>: standard input). Unreadable: a usage error (exit 2); malformed, an
    /// unknown field, a wrong type: invalid (exit 5) with every problem as <c>FILE:LINE: FIELD: reason</c>.
    /// </summary>
    internal static PolicyDocument Read(string path, CliEnvironment environment)
    {
        string source = path == "-" ? StdinName : path;
        string text;
        try
        {
            text = path == "-" ? environment.Stdin().ReadToEnd() : File.ReadAllText(path);
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw CliException.Usage($"--file: cannot read '{path}': {exception.Message}");
        }

        try
        {
            return PolicyFile.Parse(text, source);
        }
        catch (PolicyFileException exception)
        {
            string[] lines = [.. exception.Errors.Select(e => e.Format(exception.FileName))];
            throw new CliException(ExitCodes.InvalidArgument, lines[0], [.. lines.Skip(1)]);
        }
    }

    /// <summary>
    /// The server's field violations as <c>FILE:LINE: FIELD: reason</c>, the line being the field's in the file (or its
    /// nearest enclosing field's). The server words each as "field: reason"; the field is not repeated.
    /// </summary>
    internal static IReadOnlyList<string> FieldErrors(RpcException exception, PolicyDocument document)
    {
        BadRequest? badRequest;
        try
        {
            badRequest = exception.GetRpcStatus()?.GetDetail<BadRequest>();
        }
        catch (Exception)
        {
            // A malformed details trailer: the generic report takes over.
            return [];
        }

        if (badRequest is null)
        {
            return [];
        }

        return [.. badRequest.FieldViolations.Select(violation =>
        {
            string prefix = violation.Field + ": ";
            string reason = violation.Description.StartsWith(prefix, StringComparison.Ordinal)
                ? violation.Description[prefix.Length..]
                : violation.Description.Length > 0 ? violation.Description : "rejected by the server";
            return document.Describe(violation.Field, reason);
        })];
    }

    internal static bool TryParseName(string text, out string error)
    {
        if (text.Length is >= 1 and <= 40
            && (char.IsAsciiLetterLower(text[0]) || char.IsAsciiDigit(text[0]))
            && text.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c == '-'))
        {
            error = "";
            return true;
        }

        error = $"argument NAME: '{text}' is not a policy name (1-40 lowercase letters, digits or '-', starting with a letter or digit), e.g. nightly-web";
        return false;
    }

    internal static bool TryParseRunId(string text, out string error)
    {
        if (text.Length is >= 1 and <= 64 && text.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
        {
            error = "";
            return true;
        }

        error = $"argument RUN_ID: '{text}' is not a run id (letters, digits, '-', '_' or '.', at most 64), e.g. p-20261126-020000-3f9a1c";
        return false;
    }

    private static Argument<string> NameArgument()
    {
        var name = new Argument<string>("NAME") { Description = "The policy's name" };
        name.Validators.Add(result =>
        {
            if (!TryParseName(result.Tokens.Count > 0 ? result.Tokens[0].Value : "", out string error))
            {
                result.AddError(error);
            }
        });
        return name;
    }

    private static Argument<string> RunIdArgument()
    {
        var runId = new Argument<string>("RUN_ID") { Description = "The run, as policy run and policy runs print it" };
        runId.Validators.Add(result =>
        {
            if (!TryParseRunId(result.Tokens.Count > 0 ? result.Tokens[0].Value : "", out string error))
            {
                result.AddError(error);
            }
        });
        return runId;
    }

    private static Task<PolicyRunView> FollowAsync(
        CommandContext context,
        string policy,
        string runId,
        Action<PolicyRunView> onUpdate,
        Action<PolicyRunView>? onTick,
        CancellationToken cancellationToken)
    {
        var client = new PolicyService.PolicyServiceClient(context.CallInvoker);

        // The server sends the run whole once, then only what changed: the run is rebuilt here from its changes.
        var changes = new PolicyRunChanges();
        return StreamFollower.FollowAsync(
            context,
            options => client.WatchPolicyRun(new WatchPolicyRunRequest { Name = policy, RunId = runId, ChangesOnly = true }, options),
            changes.Apply,
            run => run.HasEnded,
            $"policy {policy} run {runId}",
            $"policy watch {policy} {runId}",
            onUpdate,
            onTick,
            cancellationToken);
    }

    /// <summary>The live frame on a terminal, redrawn at every update and every second (the elapsed times count).</summary>
    private static Task<PolicyRunView> FollowLiveAsync(CommandContext context, string policy, string runId, CancellationToken cancellationToken)
    {
        var live = new LiveFrame(context.Out, context.TerminalWidth);
        void Draw(PolicyRunView run) => live.Draw(PolicyRunProgressView.Frame(run, Now(context), context.Color));
        return FollowAsync(context, policy, runId, Draw, Draw, cancellationToken);
    }

    /// <summary>The end of a followed run: nothing for completed, exit 7 for partial or failed.</summary>
    private static void ThrowUnlessCompleted(PolicyRunView run)
    {
        if (run.State != "completed")
        {
            // The server's own account when it gives one ("4 of 5 VMs succeeded, ..."), else the targets' counts.
            string why = run.Error ?? $"targets {run.Summary()}";
            throw new CliException(ExitCodes.RunFailed, $"policy {run.Policy}: run {run.RunId} ended {run.State}: {why}");
        }
    }

    private static DateTime Now(CommandContext context) => context.Clock.GetUtcNow().UtcDateTime;
}
