using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.Extensions.Options;
using Orchestrator.Api.V1;
using Orchestrator.Grains.Fleet;
using Orchestrator.Grains.Placement;

namespace Orchestrator.Silo.Services;

/// <summary>orchestrator.v1.FleetService: hosts, VMs and disk chains, read from the grains.</summary>
internal sealed class FleetService(IGrainFactory grains, IHostDirectory directory, TimeProvider time, IOptions<FleetIndexOptions> indexOptions) : Api.V1.FleetService.FleetServiceBase
{
    public override async Task<ListHostsResponse> ListHosts(ListHostsRequest request, ServerCallContext context)
    {
        var ct = context.CancellationToken;
        var registered = await grains.GetGrain<IFleetGrain>(GrainKeys.Fleet).ListHostsAsync(ct);
        var served = directory.ServedHosts();
        var names = registered.Select(r => r.Name).Union(served.Keys).Order(StringComparer.Ordinal);
        var response = new ListHostsResponse();
        foreach (var name in names)
        {
            var registration = registered.FirstOrDefault(r => r.Name == name);
            var host = new Api.V1.Host { Name = name, Uri = registration?.Uri ?? "", Online = served.ContainsKey(name) };
            if (served.TryGetValue(name, out var silo))
            {
                host.Silo = silo.ToString();
                var view = await grains.GetGrain<IHostGrain>(name).GetAsync(ct);
                host.Uri = view.Uri;
                host.Driver = view.Driver;
                host.LibvirtVersion = view.LibvirtVersion;
                host.HypervisorVersion = view.HypervisorVersion;
                host.VmCount = view.VmCount;
                host.LastSyncError = view.LastSyncError ?? "";
                if (view.LastSync is { } lastSync)
                {
                    host.LastSync = Timestamp.FromDateTimeOffset(lastSync);
                }
            }

            response.Hosts.Add(host);
        }

        return response;
    }

    public override async Task<ListVmsResponse> ListVms(ListVmsRequest request, ServerCallContext context)
    {
        var scope = await FleetScope.ResolveAsync(grains, directory, request.Host, context.CancellationToken);
        var response = new ListVmsResponse();
        response.UnavailableHosts.AddRange(scope.Unavailable);
        response.Vms.AddRange((await scope.VmsAsync(grains, context.CancellationToken)).Select(ToProto));
        return response;
    }

    public override async Task<GetVmResponse> GetVm(GetVmRequest request, ServerCallContext context)
    {
        var (host, vm) = GrainKeys.ParseVm(request.Key);
        var view = await grains.GetGrain<IVirtualMachineGrain>(GrainKeys.Vm(host, vm)).GetAsync(context.CancellationToken);
        return new GetVmResponse { Vm = ToProto(view) };
    }

    public override async Task<GetDiskChainResponse> GetDiskChain(GetDiskChainRequest request, ServerCallContext context)
    {
        var (host, vm, disk) = GrainKeys.ParseDisk(request.Key);
        var view = await grains.GetGrain<IDiskChainGrain>(GrainKeys.Disk(host, vm, disk)).GetAsync(context.CancellationToken);
        var chain = new DiskChain
        {
            Key = view.Key,
            Host = view.Host,
            Vm = view.Vm,
            Target = view.Target,
            LastReconciled = Timestamp.FromDateTimeOffset(view.LastReconciled),
        };
        chain.Layers.AddRange(view.Layers.Select((l, i) => new ChainLayer { Path = l.Path, Format = l.Format, Depth = i }));
        return new GetDiskChainResponse { Chain = chain };
    }

    public override async Task<GetComplianceResponse> GetCompliance(GetComplianceRequest request, ServerCallContext context)
    {
        var ct = context.CancellationToken;
        if (request.Host.Length > 0)
        {
            GrainKeys.ValidateHost(request.Host);
        }

        if (request.Policy.Length > 0)
        {
            PolicyNames.Validate(request.Policy, "policy");
        }

        var status = PolicyMapper.ToContract(request.Status, "status");
        // From the hosts' index shards directly (only the named host's when one is asked for).
        var compliance = await FleetIndexQueries.ComplianceAsync(grains, request.Host, time.GetUtcNow(), indexOptions.Value.QueryFanOut, ct);
        var vms = FleetQueries.FilterCompliance(compliance, request.Host, request.Policy, status).ToList();

        // Answered from the fleet's index, so a host that is down is no error: its VMs are shown as last seen.
        var scope = await FleetScope.ResolveAsync(grains, directory, "", ct);
        var response = new GetComplianceResponse();
        response.Vms.AddRange(vms.Select(PolicyMapper.ToProto));
        response.UnavailableHosts.AddRange(scope.Unavailable.Where(h => request.Host.Length == 0 || h == request.Host));
        return response;
    }

    public override async Task<ListOverlaysResponse> ListOverlays(ListOverlaysRequest request, ServerCallContext context)
    {
        var ct = context.CancellationToken;
        var scope = await FleetScope.ResolveAsync(grains, directory, request.Host, ct);
        var answers = await Task.WhenAll(scope.Available.Select(async host =>
        {
            var grain = grains.GetGrain<IHostGrain>(host);
            try
            {
                if (request.Refresh)
                {
                    await grain.SyncInventoryAsync(ct);
                }

                return (Host: host, Vms: await grain.ListVmsAsync(ct));
            }
            catch (OrchestratorException e) when (e.Code == ErrorCode.HostUnavailable && request.Host.Length == 0)
            {
                // Its silo went down since the scope was resolved: listed as unavailable like the others.
                return (Host: host, Vms: (IReadOnlyList<VmView>?)null);
            }
        }));

        var response = new ListOverlaysResponse();
        response.Disks.AddRange(FleetQueries.Overlays(
            answers.Where(a => a.Vms is not null).SelectMany(a => a.Vms!.SelectMany(vm => vm.Disks.Select(d => (a.Host, vm.Name, vm.Present, d)))),
            request.All));
        response.UnavailableHosts.AddRange(scope.Unavailable.Concat(answers.Where(a => a.Vms is null).Select(a => a.Host)).Order(StringComparer.Ordinal));
        return response;
    }

    internal static Vm ToProto(VmView view)
    {
        var vm = new Vm
        {
            Key = view.Key,
            Host = view.Host,
            Name = view.Name,
            Uuid = view.Uuid.ToString(),
            PowerState = (PowerState)(int)view.PowerState,
            MemoryKib = view.MemoryKiB,
            Vcpus = view.VirtualCpus,
            LastSync = Timestamp.FromDateTimeOffset(view.LastSync),
            Present = view.Present,
            FirstSeen = Timestamp.FromDateTimeOffset(view.FirstSeen),
            LastProvenRestore = BackupService.ToProto(view.LastProvenRestore),
            LastTestRestore = BackupService.ToProto(view.LastTestRestore),
        };
        vm.Disks.AddRange(view.Disks.Select(d => new Disk { Target = d.Target, SourcePath = d.SourcePath, Format = d.Format, ChainDepth = d.ChainDepth }));
        foreach (var (key, value) in view.Labels)
        {
            vm.Labels[key] = value;
        }
        return vm;
    }
}
