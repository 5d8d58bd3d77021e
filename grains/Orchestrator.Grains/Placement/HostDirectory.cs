using Microsoft.Extensions.Options;
using Orleans.Runtime.MembershipService.SiloMetadata;

namespace Orchestrator.Grains.Placement;

/// <summary>Which live silo serves which hypervisor host, from cluster membership and silo metadata.</summary>
public interface IHostDirectory
{
    /// <summary>The live silo that serves <paramref name="host"/>, or null.</summary>
    SiloAddress? FindSilo(string host, IEnumerable<SiloAddress>? candidates = null);

    /// <summary>Every host served by a live silo now, with its silo.</summary>
    IReadOnlyDictionary<string, SiloAddress> ServedHosts();
}

internal sealed class HostDirectory(
    IClusterMembershipService membership,
    ISiloMetadataCache metadataCache,
    ILocalSiloDetails localSilo,
    IOptions<SiloMetadata> localMetadata) : IHostDirectory
{
    public SiloAddress? FindSilo(string host, IEnumerable<SiloAddress>? candidates = null)
    {
        var silos = candidates ?? ActiveSilos();
        return silos.FirstOrDefault(silo => string.Equals(HostOf(silo), host, StringComparison.Ordinal));
    }

    public IReadOnlyDictionary<string, SiloAddress> ServedHosts()
    {
        var result = new Dictionary<string, SiloAddress>(StringComparer.Ordinal);
        foreach (var silo in ActiveSilos())
        {
            if (HostOf(silo) is { } host)
            {
                result[host] = silo;
            }
        }

        return result;
    }

    private IEnumerable<SiloAddress> ActiveSilos() =>
        membership.CurrentSnapshot.Members.Values
            .Where(m => m.Status == SiloStatus.Active)
            .Select(m => m.SiloAddress);

    private string? HostOf(SiloAddress silo)
    {
        // The local silo's own metadata is known before the cache has it.
        var metadata = silo.Equals(localSilo.SiloAddress) ? localMetadata.Value.Metadata : metadataCache.GetSiloMetadata(silo).Metadata;
        return metadata.TryGetValue(HostAffinePlacement.MetadataKey, out var host) ? host : null;
    }
}
