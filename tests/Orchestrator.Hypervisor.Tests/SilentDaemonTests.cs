using System.Diagnostics;
using System.Net.Sockets;
using Orchestrator.Hypervisor.Libvirt;

namespace Orchestrator.Hypervisor.Tests;

/// <summary>The first connection to a libvirtd that accepts the socket and never answers (hung, or not libvirtd at all).</summary>
public sealed class SilentDaemonTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("orch-silent-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task ConnectAsync_SocketAcceptsButNeverAnswers_FailsWithinItsTimeout()
    {
        var path = Path.Combine(_dir, "libvirt-sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen(4);
        var accepted = new List<Socket>();
        var accepting = Task.Run(async () =>
        {
            while (true)
            {
                try
                {
                    accepted.Add(await listener.AcceptAsync());
                }
                catch (Exception e) when (e is SocketException or ObjectDisposedException)
                {
                    return;
                }
            }
        });

        var sw = Stopwatch.StartNew();
        var error = await Assert.ThrowsAsync<HypervisorException>(
            () => LibvirtHypervisor.ConnectAsync($"qemu+unix:///system?socket={path}", timeout: TimeSpan.FromSeconds(2)));
        sw.Stop();

        Assert.Equal(HypervisorErrorKind.ConnectionFailed, error.Kind);
        Assert.Contains("did not answer within 2 s", error.Message, StringComparison.Ordinal);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10), $"the connect took {sw.Elapsed.TotalSeconds:F1} s");
        Assert.NotEmpty(accepted);
        listener.Close();
        accepted.ForEach(s => s.Dispose());
        await accepting;
    }
}
