namespace Orchestrator.UnitTests.Cluster;

/// <summary>
/// Which host each silo of an in-process test cluster serves: the next host of the list for each silo name seen
/// first. The test cluster may configure silos concurrently, so the assignment is taken under a lock (two silos
/// once got the same host when it was read from a count outside one).
/// </summary>
public sealed class SiloHosts(IEnumerable<string> hosts)
{
    private readonly IReadOnlyList<string> _hosts = [.. hosts];
    private readonly Dictionary<string, string> _hostBySilo = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();

    public string Assign(string siloName)
    {
        lock (_lock)
        {
            if (!_hostBySilo.TryGetValue(siloName, out var host))
            {
                if (_hostBySilo.Count >= _hosts.Count)
                {
                    throw new InvalidOperationException($"more silos than hosts ({_hosts.Count})");
                }

                host = _hosts[_hostBySilo.Count];
                _hostBySilo[siloName] = host;
            }

            return host;
        }
    }

    public bool Serves(string siloName, string host)
    {
        lock (_lock)
        {
            return _hostBySilo.TryGetValue(siloName, out var h) && h == host;
        }
    }
}
