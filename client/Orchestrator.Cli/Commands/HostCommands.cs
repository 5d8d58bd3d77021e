using System.CommandLine;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Infrastructure;
using Orchestrator.Cli.Output;
using Orchestrator.Cli.Views;

namespace Orchestrator.Cli.Commands;

/// <summary><c>orchestrator host ...</c>: the hypervisor hosts of the fleet.</summary>
internal static class HostCommands
{
    public static Command Create(CliRuntime runtime)
    {
        var list = new Command("list", "List every host the fleet knows, and whether a live silo serves it.");
        runtime.SetAction(list, async (parseResult, context, cancellationToken) =>
        {
            var client = new FleetService.FleetServiceClient(context.CallInvoker);
            ListHostsResponse response = await client.ListHostsAsync(new ListHostsRequest(), context.CallOptions(cancellationToken));
            context.Render(HostView.FromList(response.Hosts), CliJsonContext.Output.IReadOnlyListHostView, HostView.WriteTable);
        });

        return new Command("host", "Hypervisor hosts.") { list };
    }
}
