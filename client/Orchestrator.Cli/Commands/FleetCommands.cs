using System.CommandLine;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Errors;
using Orchestrator.Cli.Infrastructure;
using Orchestrator.Cli.Output;
using Orchestrator.Cli.Views;

namespace Orchestrator.Cli.Commands;

/// <summary><c>orchestrator fleet ...</c>: questions about the whole fleet.</summary>
internal static class FleetCommands
{
    private static readonly (string Name, ComplianceStatus Value)[] Statuses =
    [
        ("ok", ComplianceStatus.Ok),
        ("out-of-rpo", ComplianceStatus.OutOfRpo),
        ("never", ComplianceStatus.Never),
        ("unprotected", ComplianceStatus.Unprotected),
    ];

    public static Command Create(CliRuntime runtime) =>
        new("fleet", "Fleet-wide questions: who is protected by which policy, which disks run on overlays.")
        {
            CreateCompliance(runtime),
            CreateOverlays(runtime),
        };

    private static Command CreateCompliance(CliRuntime runtime)
    {
        Option<string?> host = HostOption("Only the VMs of this host");
        var policy = new Option<string?>("--policy")
        {
            Description = "Only the VMs this policy selects (--status then matches this policy's status for the VM)",
            HelpName = "NAME",
        };
        policy.Validators.Add(result =>
        {
            if (!PolicyCommands.TryParseName(result.GetValueOrDefault<string?>() ?? "", out string error))
            {
                result.AddError(error.Replace("argument NAME", "--policy", StringComparison.Ordinal));
            }
        });
        var status = new Option<string?>("--status")
        {
            Description = "Only VMs with this status: ok, out-of-rpo, never (selected, never backed up) or unprotected (no policy)",
            HelpName = "STATUS",
        };
        status.AcceptOnlyFromAmong([.. Statuses.Select(s => s.Name)]);
        var failOnViolation = new Option<bool>("--fail-on-violation")
        {
            Description = $"Exit {ExitCodes.FailedPrecondition} when a listed VM (present on its host) is out-of-rpo or never backed up; for cron jobs",
        };
        var compliance = new Command("compliance", "Every VM with the policies that select it, its newest good backup and "
            + "checkpoint, and whether each policy's RPO holds. VMs of hosts whose silo is down are shown as last seen, with a warning.")
        {
            host,
            policy,
            status,
            failOnViolation,
        };
        runtime.SetAction(compliance, async (parseResult, context, cancellationToken) =>
        {
            string hostName = parseResult.GetValue(host) ?? "";
            string? statusName = parseResult.GetValue(status);
            var request = new GetComplianceRequest
            {
                Host = hostName,
                Policy = parseResult.GetValue(policy) ?? "",
                Status = Statuses.FirstOrDefault(s => s.Name == statusName).Value,
            };
            var client = new FleetService.FleetServiceClient(context.CallInvoker);
            GetComplianceResponse response = await client.GetComplianceAsync(request, context.CallOptions(cancellationToken));
            ComplianceView view = ComplianceView.From(response);
            foreach (string down in view.UnavailableHosts)
            {
                context.Warn($"host {down} is unavailable (its silo is down); its VMs are shown as last seen");
            }

            context.Render(view, CliJsonContext.Output.ComplianceView, ComplianceView.WriteTable);
            if (parseResult.GetValue(failOnViolation) && view.Violations() is { Count: > 0 } violations)
            {
                const int Named = 5;
                string names = string.Join(", ", violations.Take(Named).Select(v => $"{v.Host}/{v.Vm} ({v.Status})"));
                string more = violations.Count > Named ? $" and {violations.Count - Named} more" : "";
                throw new CliException(ExitCodes.FailedPrecondition, $"{violations.Count} VM(s) out of policy: {names}{more}");
            }
        });
        return compliance;
    }

    private static Command CreateOverlays(CliRuntime runtime)
    {
        Option<string?> host = HostOption("Only the disks of this host's VMs");
        var all = new Option<bool>("--all") { Description = "Every disk with its chain depth, not only those on overlays" };
        var refresh = new Option<bool>("--refresh")
        {
            Description = "Re-read each host's inventory from its hypervisor first (else the last inventory sync's view, at most 30 s old by default)",
        };
        var overlays = new Command("overlays", "Disks whose backing chain is deeper than one image now, across the fleet: "
            + "chain depth, the active image, and whether it is an orchestrator backup overlay. Hosts whose silo is down are named in a warning.")
        {
            host,
            all,
            refresh,
        };
        runtime.SetAction(overlays, async (parseResult, context, cancellationToken) =>
        {
            string hostName = parseResult.GetValue(host) ?? "";
            var client = new FleetService.FleetServiceClient(context.CallInvoker);
            ListOverlaysResponse response = await client.ListOverlaysAsync(
                new ListOverlaysRequest { Host = hostName, All = parseResult.GetValue(all), Refresh = parseResult.GetValue(refresh) },
                context.CallOptions(cancellationToken));
            context.ReportUnavailableHosts(response.UnavailableHosts, hostName, "disks");
            context.Render(OverlaysView.From(response), CliJsonContext.Output.OverlaysView, OverlaysView.WriteTable);
        });
        return overlays;
    }

    private static Option<string?> HostOption(string description)
    {
        var host = new Option<string?>("--host") { Description = description, HelpName = "HOST" };
        host.Validators.Add(result =>
        {
            if (!ResourceKeys.TryParseHostName(result.GetValueOrDefault<string?>() ?? "", "--host", out string error))
            {
                result.AddError(error);
            }
        });
        return host;
    }
}
