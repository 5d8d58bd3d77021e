using System.CommandLine;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Infrastructure;
using Orchestrator.Cli.Output;
using Orchestrator.Cli.Views;

namespace Orchestrator.Cli.Commands;

/// <summary><c>orchestrator restore ...</c>: a completed backup set becomes new disk images, and on request a new VM.</summary>
internal static class RestoreCommands
{
    public static Command Create(CliRuntime runtime)
    {
        Argument<RunKey> key = ResourceKeys.RunKeyArgument($"The completed run, as host/vm/run (e.g. {ResourceKeys.RunKeyExample})");
        var name = new Option<string>("--as")
        {
            Description = "Name of the new VM, also the prefix of its images (no '/')",
            HelpName = "NAME",
            Required = true,
        };
        name.Validators.Add(result =>
        {
            if (!ResourceKeys.TryParseVmName(result.GetValueOrDefault<string?>() ?? "", "--as", out string error))
            {
                result.AddError(error);
            }
        });
        var define = new Option<bool>("--define")
        {
            Description = "Also define the new VM (new UUID, new MACs, its own files) from the backed-up definition",
        };
        var host = new Option<string?>("--host")
        {
            Description = "Restore on this host (its silo must be up and reach the backup root); default: the run's own host. "
                + "Works while the run's host is down",
            HelpName = "HOST",
        };
        host.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<string?>() is { } text && !ResourceKeys.TryParseHostName(text, "--host", out string error))
            {
                result.AddError(error);
            }
        });
        var start = new Option<bool>("--start")
        {
            Description = "Also start the new VM (needs --define)",
        };

        var restore = new Command("restore", "Restore a completed backup as new disk images on the run's host (or on "
            + "--host), and with --define as a new VM, --start to boot it. Everything is read from the backup set; the "
            + "original VM is not touched. The images are copied before the answer: raise --timeout for big disks.")
        {
            key, name, define, host, start,
        };
        restore.Validators.Add(result =>
        {
            if (result.GetValue(start) && !result.GetValue(define))
            {
                result.AddError("--start: needs --define (only a VM the restore defines can be started)");
            }
        });
        runtime.SetAction(restore, async (parseResult, context, cancellationToken) =>
        {
            var client = new BackupService.BackupServiceClient(context.CallInvoker);
            RestoreResponse response = await client.RestoreAsync(
                new RestoreRequest
                {
                    Key = parseResult.GetRequiredValue(key).ToString(),
                    NewName = parseResult.GetRequiredValue(name),
                    Define = parseResult.GetValue(define),
                    Host = parseResult.GetValue(host) ?? "",
                    Start = parseResult.GetValue(start),
                },
                context.CallOptions(cancellationToken));
            context.Render(RestoreView.From(response), CliJsonContext.Output.RestoreView, RestoreView.WriteDetails);
        });
        return restore;
    }
}
