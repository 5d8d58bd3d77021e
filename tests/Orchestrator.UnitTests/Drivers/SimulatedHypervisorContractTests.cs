using Orchestrator.Hypervisor;
using Orchestrator.Hypervisor.Contract;
using Orchestrator.Hypervisor.Simulated;

namespace Orchestrator.UnitTests.Drivers;

/// <summary>
/// The hypervisor contract (tests/Shared/HypervisorContract) on the simulated driver: a new in-memory host per test
/// with the two domains the contract asks for. LibvirtHypervisorContractTests runs the same tests on real libvirt.
/// </summary>
public sealed class SimulatedHypervisorContractTests : HypervisorContract, IAsyncLifetime
{
    private readonly SimulatedHypervisor _hypervisor = new(new SimulatedOptions { HostName = "contract" });

    public SimulatedHypervisorContractTests()
    {
        _hypervisor.AddDomain(RunningVm, DomainPowerState.Running, [("vda", "raw", 64 * MiB), ("vdb", "qcow2", 64 * MiB)], imageDir: "/sim/contract/images");
        _hypervisor.AddDomain(ShutOffVm, DomainPowerState.ShutOff, [("vda", "qcow2", 64 * MiB)], imageDir: "/sim/contract/images");
    }

    protected override IHypervisor Hypervisor => _hypervisor;

    protected override string RunningVm => "contract-running";

    protected override string ShutOffVm => "contract-off";

    protected override TimeSpan EventTimeout => TimeSpan.FromSeconds(10);

    protected override string NewScratchDir() => $"/sim/contract/scratch-{Guid.NewGuid():N}";

    protected override Task LetTheGuestWriteAsync(string domain)
    {
        _hypervisor.SimulateGuestWrites(domain, 4 * MiB);
        return Task.CompletedTask;
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync() => await _hypervisor.DisposeAsync();
}
