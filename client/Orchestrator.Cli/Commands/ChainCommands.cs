using System.CommandLine;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Errors;
using Orchestrator.Cli.Infrastructure;
using Orchestrator.Cli.Output;
using Orchestrator.Cli.Views;

namespace Orchestrator.Cli.Commands;

/// <summary><c>orchestrator chain ...</c>: the backing chains of VM disks.</summary>
internal static class ChainCommands
{
    public static Command Create(CliRuntime runtime)
    {
        Argument<DiskKey> key = ResourceKeys.DiskKeyArgument("The disk, as host/vm/disk (e.g. kvm-01/web-1/vda)");
        var show = new Command("show", "Show a disk's backing chain, active image first.") { key };
        runtime.SetAction(show, async (parseResult, context, cancellationToken) =>
        {
            DiskKey diskKey = parseResult.GetRequiredValue(key);
            var client = new FleetService.FleetServiceClient(context.CallInvoker);
            GetDiskChainResponse response = await client.GetDiskChainAsync(
                new GetDiskChainRequest { Key = diskKey.ToString() }, context.CallOptions(cancellationToken));
            DiskChain chain = response.Chain
                ?? throw new CliException(ExitCodes.Internal, $"the server answered without a chain for {diskKey}");
            context.Render(DiskChainView.From(chain), CliJsonContext.Output.DiskChainView, DiskChainView.WriteDetails);
        });

        return new Command("chain", "Disk backing chains.") { show };
    }
}
