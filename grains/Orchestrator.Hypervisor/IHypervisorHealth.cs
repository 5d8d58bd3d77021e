namespace Orchestrator.Hypervisor;

/// <summary>A driver that can lose its hypervisor (libvirtd restarted or hung) and reconnect by itself.</summary>
public interface IHypervisorHealth
{
    /// <summary>Null while connected; otherwise why the hypervisor is unreachable (calls fail fast meanwhile).</summary>
    string? Unreachable { get; }
}
