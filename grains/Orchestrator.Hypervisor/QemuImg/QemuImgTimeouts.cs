namespace Orchestrator.Hypervisor.QemuImg;

/// <summary>
/// How long each qemu-img verb may run before its process tree is killed and the call fails with
/// <see cref="HypervisorErrorKind.Timeout"/>. Metadata reads are short; verbs that move a whole image are generous
/// (a convert or commit of a multi-TiB disk on slow storage takes hours, not days).
/// </summary>
public sealed record QemuImgTimeouts
{
    /// <summary>qemu-img info (also the internal snapshot listing): metadata only.</summary>
    public TimeSpan Info { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>qemu-img create: metadata only.</summary>
    public TimeSpan Create { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>qemu-img check: walks all metadata of a copy.</summary>
    public TimeSpan Check { get; init; } = TimeSpan.FromHours(1);

    /// <summary>qemu-img commit: moves an overlay's data into its base.</summary>
    public TimeSpan Commit { get; init; } = TimeSpan.FromHours(12);

    /// <summary>qemu-img convert: copies a whole image or chain.</summary>
    public TimeSpan Convert { get; init; } = TimeSpan.FromHours(24);
}
