namespace Orchestrator.Grains.Placement;

/// <summary>Which live silo serves which hypervisor host, from cluster membership alone.</summary>
public interface IHostDirectory
{
    /// <summary>The live silo that serves <paramref name="host"/>, or null.</summary>
    SiloAddress? FindSilo(string host, IEnumerable<SiloAddress>? candidates = null);

    /// <summary>Every host served by a live silo now, with its silo.</summary>
    IReadOnlyDictionary<string, SiloAddress> ServedHosts();
}

/// <summary>
/// The silo that serves a host is named after it (<see cref="HostSiloName"/>), and a silo's name is part of its
/// membership entry: every silo learns it with the silo itself, from the membership table it refreshes on its own.
/// (Silo metadata was used before: a fetch that failed while the other silo was still joining was cached as
/// failed and tried again only on a later membership change, so in a stable cluster a running silo's host could
/// stay "unavailable" for good.)
/// </summary>
internal sealed class HostDirectory(IClusterMembershipService membership) : IHostDirectory
{
    public SiloAddress? FindSilo(string host, IEnumerable<SiloAddress>? candidates = null)
    {
        var served = ServedHosts();
        if (!served.TryGetValue(host, out var silo))
        {
            return null;
        }

        return candidates is null || candidates.Contains(silo) ? silo : null;
    }

    public IReadOnlyDictionary<string, SiloAddress> ServedHosts()
    {
        var result = new Dictionary<string, SiloAddress>(StringComparer.Ordinal);
        foreach (var member in membership.CurrentSnapshot.Members.Values)
        {
            if (member.Status != SiloStatus.Active || HostSiloName.HostOf(member.Name) is not { } host)
            {
                continue;
            }

            // A host whose silo restarted has one active entry per generation until the old one is declared dead:
            // the newest generation is the one that serves it.
            if (!result.TryGetValue(host, out var known) || member.SiloAddress.Generation > known.Generation)
            {
                result[host] = member.SiloAddress;
            }
        }

        return result;
    }
}

/// <summary>The silo name that announces the hypervisor host a silo serves.</summary>
public static class HostSiloName
{
    private const string Prefix = "orchestrator-host:";

    public static string For(string host) => Prefix + host;

    /// <summary>The host a silo of this name serves, or null for a silo that serves none.</summary>
    public static string? HostOf(string? siloName) =>
        siloName is not null && siloName.StartsWith(Prefix, StringComparison.Ordinal) && siloName.Length > Prefix.Length
            ? siloName[Prefix.Length..]
            : null;
}
