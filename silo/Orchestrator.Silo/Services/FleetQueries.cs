using Orchestrator.Api.V1;

namespace Orchestrator.Silo.Services;

/// <summary>The fleet-wide questions of FleetService that are pure functions of what the grains answered.</summary>
internal static class FleetQueries
{
    /// <summary>What every backup overlay's file name holds: <c>&lt;disk&gt;.orch-&lt;run&gt;.qcow2</c>.</summary>
    public const string OverlayMarker = ".orch-";

    /// <summary>
    /// The compliance entries a request asks for: of one host (empty: all), selected by one policy (empty: any), with
    /// one status (null: any). With a policy, the status compared is that policy's for the VM, not the VM's overall.
    /// Sorted by host, then VM.
    /// </summary>
    public static IEnumerable<Orchestrator.VmCompliance> FilterCompliance(
        IEnumerable<Orchestrator.VmCompliance> vms, string host, string policy, Orchestrator.ComplianceStatus? status) =>
        vms.Where(vm => host.Length == 0 || vm.Host == host)
            .Select(vm => (Vm: vm, Status: policy.Length == 0 ? vm.Status : vm.Policies.FirstOrDefault(p => p.Policy == policy)?.Status))
            .Where(x => x.Status is not null && (status is null || x.Status == status))
            .Select(x => x.Vm)
            .OrderBy(vm => vm.Host, StringComparer.Ordinal)
            .ThenBy(vm => vm.Vm, StringComparer.Ordinal);

    /// <summary>
    /// The disks of present VMs whose chain is deeper than one image (every disk with <paramref name="all"/>), sorted by
    /// host, VM and disk. VMs that vanished from their host are left out: nothing of theirs runs now.
    /// </summary>
    public static IEnumerable<OverlayDisk> Overlays(IEnumerable<(string Host, string Vm, bool Present, DiskView Disk)> disks, bool all) =>
        disks.Where(d => d.Present && (all || d.Disk.ChainDepth > 1))
            .OrderBy(d => d.Host, StringComparer.Ordinal)
            .ThenBy(d => d.Vm, StringComparer.Ordinal)
            .ThenBy(d => d.Disk.Target, StringComparer.Ordinal)
            .Select(d => new OverlayDisk
            {
                Host = d.Host,
                Vm = d.Vm,
                Disk = d.Disk.Target,
                ChainDepth = d.Disk.ChainDepth,
                ActivePath = d.Disk.SourcePath,
                OrchestratorOverlay = IsOrchestratorOverlay(d.Disk.SourcePath),
            });

    /// <summary>The image is one of the orchestrator's backup overlays (judged by its file name, not its directory).</summary>
    public static bool IsOrchestratorOverlay(string path) =>
        Path.GetFileName(path).Contains(OverlayMarker, StringComparison.Ordinal);
}
