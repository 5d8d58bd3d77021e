using System.CommandLine;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Errors;
using Orchestrator.Cli.Infrastructure;
using Orchestrator.Cli.Output;
using Orchestrator.Cli.Views;

namespace Orchestrator.Cli.Commands;

/// <summary><c>orchestrator vm ...</c>: virtual machines.</summary>
internal static class VmCommands
{
    public static Command Create(CliRuntime runtime) =>
        new("vm", "Virtual machines.") { CreateList(runtime), CreateShow(runtime) };

    private static Command CreateList(CliRuntime runtime)
    {
        var host = new Option<string?>("--host")
        {
            Description = "Only the VMs of this host",
            HelpName = "HOST",
        };
        host.Validators.Add(result =>
        {
            string value = result.GetValueOrDefault<string?>() ?? "";
            if (!ResourceKeys.TryParseHostName(value, "--host", out string error))
            {
                result.AddError(error);
            }
        });

        var list = new Command("list", "List VMs on every host, or on one with --host. "
            + "Hosts whose silo is down are named in a warning on stderr.")
        {
            host,
        };
        runtime.SetAction(list, async (parseResult, context, cancellationToken) =>
        {
            string hostName = parseResult.GetValue(host) ?? "";
            var client = new FleetService.FleetServiceClient(context.CallInvoker);
            ListVmsResponse response = await client.ListVmsAsync(
                new ListVmsRequest { Host = hostName }, context.CallOptions(cancellationToken));
            context.ReportUnavailableHosts(response.UnavailableHosts, hostName, "VMs");

            context.Render(VmView.FromList(response.Vms), CliJsonContext.Output.IReadOnlyListVmView, VmView.WriteTable);
        });
        return list;
    }

    private static Command CreateShow(CliRuntime runtime)
    {
        Argument<VmKey> key = ResourceKeys.VmKeyArgument("The VM, as host/vm (e.g. kvm-01/web-1)");
        var show = new Command("show", "Show one VM: state, resources, labels and disks.") { key };
        runtime.SetAction(show, async (parseResult, context, cancellationToken) =>
        {
            VmKey vmKey = parseResult.GetRequiredValue(key);
            var client = new FleetService.FleetServiceClient(context.CallInvoker);
            GetVmResponse response = await client.GetVmAsync(
                new GetVmRequest { Key = vmKey.ToString() }, context.CallOptions(cancellationToken));
            Vm vm = response.Vm ?? throw new CliException(ExitCodes.Internal, $"the server answered without a VM for {vmKey}");
            context.Render(VmView.From(vm), CliJsonContext.Output.VmView, VmView.WriteDetails);
        });
        return show;
    }
}
