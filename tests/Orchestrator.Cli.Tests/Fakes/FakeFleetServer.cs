using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Orchestrator.Cli.Tests.Fakes;

/// <summary>Kestrel serving <see cref="FakeFleetService"/>, <see cref="FakeBackupService"/> and <see cref="FakePolicyService"/> over h2c on a random loopback port, like a silo.</summary>
internal sealed class FakeFleetServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private FakeFleetServer(WebApplication app, Uri address)
    {
        _app = app;
        Address = address;
    }

    public Uri Address { get; }

    public static async Task<FakeFleetServer> StartAsync()
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(kestrel =>
            kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Protocols = HttpProtocols.Http2));
        builder.Services.AddGrpc();
        builder.Services.AddSingleton<FakeFleetService>();
        builder.Services.AddSingleton<FakeBackupService>();
        builder.Services.AddSingleton<FakePolicyService>();
        WebApplication app = builder.Build();
        app.MapGrpcService<FakeFleetService>();
        app.MapGrpcService<FakeBackupService>();
        app.MapGrpcService<FakePolicyService>();
        await app.StartAsync();
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        return new FakeFleetServer(app, new Uri(address));
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
