using Grpc.Core;
using Grpc.Net.Client;
using Orchestrator.Api.V1;

namespace Orchestrator.IntegrationTests.Infrastructure;

public static class GrpcClients
{
    public static FleetService.FleetServiceClient Fleet(string endpoint) =>
        new(GrpcChannel.ForAddress(endpoint));

    /// <summary>Polls until the VM is known (the host's first inventory sync ran).</summary>
    public static async Task<Vm> WaitForVmAsync(this FleetService.FleetServiceClient fleet, string key, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(60));
        while (true)
        {
            try
            {
                return (await fleet.GetVmAsync(new GetVmRequest { Key = key })).Vm;
            }
            catch (RpcException e) when (e.StatusCode is StatusCode.NotFound or StatusCode.Unavailable && DateTime.UtcNow < deadline)
            {
                await Task.Delay(200);
            }
        }
    }
}
