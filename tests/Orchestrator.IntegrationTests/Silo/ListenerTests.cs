using System.Globalization;
using System.Net;
using Orchestrator.IntegrationTests.Infrastructure;

namespace Orchestrator.IntegrationTests.Silo;

/// <summary>The TCP listeners of one process, read from /proc (what <c>ss -ltnp</c> shows for its pid).</summary>
internal static class Listeners
{
    public static IReadOnlyList<IPEndPoint> Of(int pid)
    {
        var inodes = new HashSet<string>(StringComparer.Ordinal);
        foreach (var fd in Directory.GetFiles($"/proc/{pid}/fd"))
        {
            try
            {
                if (new FileInfo(fd).LinkTarget is { } target && target.StartsWith("socket:[", StringComparison.Ordinal))
                {
                    inodes.Add(target["socket:[".Length..^1]);
                }
            }
            catch (IOException)
            {
                // The descriptor closed while listed.
            }
        }

        var listening = new List<IPEndPoint>();
        foreach (var file in new[] { "/proc/net/tcp", "/proc/net/tcp6" })
        {
            foreach (var line in File.ReadLines(file).Skip(1))
            {
                var columns = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);

                // local_address rem_address st ... inode (column 9); 0A is LISTEN.
                if (columns[3] != "0A" || !inodes.Contains(columns[9]))
                {
                    continue;
                }

                var (address, port) = (columns[1].Split(':')[0], int.Parse(columns[1].Split(':')[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture));
                listening.Add(new IPEndPoint(ParseAddress(address), port));
            }
        }

        return listening;
    }

    private static IPAddress ParseAddress(string hex)
    {
        var bytes = Convert.FromHexString(hex);

        // /proc prints each 32-bit word in host (little-endian) order.
        for (var i = 0; i < bytes.Length; i += 4)
        {
            Array.Reverse(bytes, i, 4);
        }

        return new IPAddress(bytes);
    }
}

public sealed class ListenerTests
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(10) };

    [Fact]
    public async Task EmbeddedSilo_ListensOnlyOnGrpcHttpAndLoopbackSiloPort_NoGateway()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"orchestrator-listen-{Guid.NewGuid():N}");
        await using var silo = new SiloProcess("demo-01", dir);
        try
        {
            silo.Start();
            await silo.WaitReadyAsync();

            var listening = Listeners.Of(silo.Pid);

            Assert.Equal(
                new[] { silo.GrpcPort, silo.HttpPort, silo.SiloPort }.Order(),
                listening.Select(e => e.Port).Distinct().Order());
            Assert.All(listening, e => Assert.Equal(IPAddress.Loopback, e.Address));
        }
        finally
        {
            await silo.KillAsync();
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Dashboard_Enabled_ServedOnTheHttpPortOnlyNeverOnGrpc()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"orchestrator-dash-{Guid.NewGuid():N}");
        await using var silo = new SiloProcess("demo-01", dir, new Dictionary<string, string> { ["Orchestrator__Endpoints__Dashboard"] = "true" });
        try
        {
            silo.Start();
            await silo.WaitReadyAsync();

            using var onHttp = await Http.GetAsync(new Uri($"http://127.0.0.1:{silo.HttpPort}/dashboard"));
            Assert.Equal(HttpStatusCode.OK, onHttp.StatusCode);

            // The gRPC port speaks HTTP/2 without TLS (prior knowledge): the dashboard must not answer there.
            using var request = new HttpRequestMessage(HttpMethod.Get, $"http://127.0.0.1:{silo.GrpcPort}/dashboard")
            {
                Version = HttpVersion.Version20,
                VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            };
            using var onGrpc = await Http.SendAsync(request);
            Assert.Equal(HttpStatusCode.NotFound, onGrpc.StatusCode);
        }
        finally
        {
            await silo.KillAsync();
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Dashboard_NonLoopbackBindWithoutSetting_Off()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"orchestrator-dash-{Guid.NewGuid():N}");
        await using var silo = new SiloProcess("demo-01", dir, new Dictionary<string, string>
        {
            ["Orchestrator__Endpoints__BindAddress"] = "0.0.0.0",
            ["Orchestrator__Security__AllowInsecureRemote"] = "true",
        });
        silo.Set("Orchestrator__Endpoints__Dashboard", null);
        try
        {
            silo.Start();
            await silo.WaitReadyAsync();

            using var response = await Http.GetAsync(new Uri($"http://127.0.0.1:{silo.HttpPort}/dashboard"));
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        }
        finally
        {
            await silo.KillAsync();
            Directory.Delete(dir, recursive: true);
        }
    }
}

[Collection(PostgresCollection.Name)]
public sealed class ClusterListenerTests(PostgresFixture postgres)
{
    [Fact]
    public async Task ClusterSilo_SiloPortOnTheAdvertisedAddressOnly_NoGateway()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"orchestrator-listen-{Guid.NewGuid():N}");

        // 127.0.0.2 is this machine's too (all of 127/8 is loopback): an advertised address other than 127.0.0.1
        // used to make the silo listen on every interface.
        await using var silo = new SiloProcess("kvm-01", dir, new Dictionary<string, string>
        {
            ["Orchestrator__Persistence__Mode"] = "Cluster",
            ["Orchestrator__Persistence__PostgresConnectionString"] = postgres.ConnectionString,
            ["Orchestrator__Cluster__ClusterId"] = $"listen-{Guid.NewGuid():N}"[..16],
            ["Orchestrator__Cluster__ServiceId"] = $"listen-{Guid.NewGuid():N}"[..16],
            ["Orchestrator__Cluster__AdvertisedAddress"] = "127.0.0.2",
        });
        try
        {
            silo.Start();
            await silo.WaitReadyAsync();

            var listening = Listeners.Of(silo.Pid);

            Assert.Equal(
                new[] { silo.GrpcPort, silo.HttpPort, silo.SiloPort }.Order(),
                listening.Select(e => e.Port).Distinct().Order());
            var siloPort = Assert.Single(listening, e => e.Port == silo.SiloPort);
            Assert.Equal(IPAddress.Parse("127.0.0.2"), siloPort.Address);
        }
        finally
        {
            await silo.KillAsync();
            Directory.Delete(dir, recursive: true);
        }
    }
}
