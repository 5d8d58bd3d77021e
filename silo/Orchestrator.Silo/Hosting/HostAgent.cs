using Microsoft.Extensions.Options;
using Orchestrator.Grains.Backups;
using Orchestrator.Hypervisor;
using Orchestrator.Silo.Configuration;

namespace Orchestrator.Silo.Hosting;

/// <summary>
/// Keeps the local host's inventory current: syncs at start, on hypervisor lifecycle events (debounced) and
/// every <see cref="OrchestratorSettings.InventorySyncInterval"/>.
/// </summary>
internal sealed partial class HostAgent(
    IGrainFactory grains,
    IHypervisor hypervisor,
    IOptions<OrchestratorSettings> settings,
    ILogger<HostAgent> logger) : BackgroundService
{
    private static readonly TimeSpan Debounce = TimeSpan.FromMilliseconds(250);
    private readonly SemaphoreSlim _wake = new(0);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        hypervisor.DomainEvent += OnDomainEvent;
        try
        {
            var host = grains.GetGrain<IHostGrain>(settings.Value.Host.Name);
            var retry = TimeSpan.FromMilliseconds(200);
            var testRestoresWoken = false;
            while (!stoppingToken.IsCancellationRequested)
            {
                TimeSpan wait;
                try
                {
                    var view = await host.SyncInventoryAsync(stoppingToken);
                    LogSynced(logger, view.Name, view.VmCount);
                    if (!testRestoresWoken)
                    {
                        // Wakes this host's test restores: a test cut short when this silo last stopped is cleaned up now.
                        await grains.GetGrain<ITestRestoreHostGrain>(settings.Value.Host.Name).GetAsync("", stoppingToken);
                        testRestoresWoken = true;
                    }

                    wait = settings.Value.InventorySyncInterval;
                    retry = TimeSpan.FromMilliseconds(200);
                }
                catch (Exception e) when (!stoppingToken.IsCancellationRequested)
                {
                    // Right after start placement may not see this silo's metadata yet: retry soon.
                    LogSyncFailed(logger, settings.Value.Host.Name, e.Message);
                    wait = retry;
                    retry = TimeSpan.FromTicks(Math.Min(retry.Ticks * 2, settings.Value.InventorySyncInterval.Ticks));
                }

                if (await _wake.WaitAsync(wait, stoppingToken))
                {
                    await Task.Delay(Debounce, stoppingToken);
                    while (_wake.CurrentCount > 0)
                    {
                        await _wake.WaitAsync(stoppingToken);
                    }
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        finally
        {
            hypervisor.DomainEvent -= OnDomainEvent;
        }
    }

    private void OnDomainEvent(object? sender, DomainEvent e)
    {
        if (e.Kind == DomainEventKind.Lifecycle || e.Status == BlockJobEventStatus.Completed)
        {
            _wake.Release();
        }
    }

    public override void Dispose()
    {
        _wake.Dispose();
        base.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Host {Host}: inventory synced ({Count} VMs)")]
    private static partial void LogSynced(ILogger logger, string host, int count);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Host {Host}: inventory sync failed, retrying: {Reason}")]
    private static partial void LogSyncFailed(ILogger logger, string host, string reason);
}
