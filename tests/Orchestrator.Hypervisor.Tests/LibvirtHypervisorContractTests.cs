using Orchestrator.Hypervisor.Contract;
using Orchestrator.Hypervisor.Tests.Lab;

namespace Orchestrator.Hypervisor.Tests;

/// <summary>
/// The hypervisor contract (tests/Shared/HypervisorContract) on real libvirtd + QEMU: the lab host and guests of
/// <see cref="LabFixture"/>, shared with the other driver tests of the collection (which run one at a time). The
/// running domain is <see cref="LabFixture.BackupVm"/> (vda raw, vdb qcow2, writing its counter), the shut-off one
/// <see cref="LabFixture.OfflineVm"/>; every contract test leaves them as it found them.
/// </summary>
[Collection(LabCollection.Name)]
public sealed class LibvirtHypervisorContractTests(LabFixture lab) : HypervisorContract
{
    protected override IHypervisor Hypervisor => lab.Hypervisor;

    protected override string RunningVm => LabFixture.BackupVm;

    protected override string ShutOffVm => LabFixture.OfflineVm;

    protected override string NewScratchDir() => lab.NewWorkDir("contract");
}
