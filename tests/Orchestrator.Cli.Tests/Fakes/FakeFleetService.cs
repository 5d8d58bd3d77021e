using Google.Rpc;
using Grpc.Core;
using Orchestrator.Api.V1;

namespace Orchestrator.Cli.Tests.Fakes;

/// <summary>A FleetService with canned answers, including the failures the CLI must map.</summary>
internal sealed class FakeFleetService : FleetServiceBinding
{
    public override Task<ListHostsResponse> ListHosts(ListHostsRequest request, ServerCallContext context) =>
        Task.FromResult(new ListHostsResponse { Hosts = { Samples.OnlineHost(), Samples.OfflineHost() } });

    public override Task<ListVmsResponse> ListVms(ListVmsRequest request, ServerCallContext context)
    {
        if (request.Host == "bogus")
        {
            throw Samples.RichError(Code.InvalidArgument, "unknown host 'bogus'", Samples.BadField("host", "no such host in the fleet"));
        }

        return Task.FromResult(new ListVmsResponse
        {
            Vms = { Samples.RunningVm(), Samples.ShutOffVm() },
            UnavailableHosts = { "kvm-02" },
        });
    }

    public override Task<GetVmResponse> GetVm(GetVmRequest request, ServerCallContext context) => request.Key switch
    {
        "kvm-01/web-1" => Task.FromResult(new GetVmResponse { Vm = Samples.RunningVm() }),
        "kvm-02/db-1" => throw Samples.RichError(Code.Unavailable, "host kvm-02 is unavailable", Samples.HostUnavailable("kvm-02")),
        _ => throw Samples.RichError(Code.NotFound, $"VM {request.Key} not found"),
    };

    public override Task<GetDiskChainResponse> GetDiskChain(GetDiskChainRequest request, ServerCallContext context) =>
        Task.FromResult(new GetDiskChainResponse { Chain = Samples.Chain() });
}
