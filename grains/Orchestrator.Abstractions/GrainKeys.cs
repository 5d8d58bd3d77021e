using System.Text.RegularExpressions;

namespace Orchestrator;

/// <summary>
/// Keys of host-affine grains: <c>host</c>, <c>host/vm</c>, <c>host/vm/disk</c>. The first segment names the
/// hypervisor host; placement reads it to pick the silo that serves that host.
/// </summary>
public static partial class GrainKeys
{
    public const char Separator = '/';

    /// <summary>The key of the fleet singleton.</summary>
    public const string Fleet = "fleet";

    public static string Vm(string host, string vm) => $"{host}{Separator}{vm}";

    public static string Disk(string host, string vm, string target) => $"{host}{Separator}{vm}{Separator}{target}";

    /// <summary>The host segment of any host-affine key (no validation).</summary>
    public static string HostOf(string key)
    {
        var slash = key.IndexOf(Separator, StringComparison.Ordinal);
        return slash < 0 ? key : key[..slash];
    }

    public static void ValidateHost(string host, string field = "host")
    {
        if (string.IsNullOrWhiteSpace(host))
        {
            throw OrchestratorException.InvalidArgument(field, "a host name is required");
        }

        if (!HostPattern().IsMatch(host))
        {
            throw OrchestratorException.InvalidArgument(field, $"{OrchestratorException.Quote(host)} is not a valid host name (letters, digits, '-', '_' and '.', at most 63 characters, starting with a letter or digit)");
        }
    }

    /// <summary>Longest VM name accepted (libvirt allows more; a name is also a directory name in backup sets).</summary>
    public const int MaxVmNameLength = 200;

    /// <summary>
    /// A VM name is 1-200 characters without '/', NUL or other control characters, without surrounding spaces, and
    /// neither "." nor "..": it becomes a directory or file name (backup sets, restored images), so a name that is a
    /// path step must never be accepted.
    /// </summary>
    public static void ValidateVmName(string vm, string field = "vm")
    {
        if (string.IsNullOrWhiteSpace(vm))
        {
            throw OrchestratorException.InvalidArgument(field, "a VM name is required");
        }

        if (vm is "." or "..")
        {
            throw OrchestratorException.InvalidArgument(field, $"{OrchestratorException.Quote(vm)} is not a valid VM name ('.' and '..' are path steps)");
        }

        if (vm.Length > MaxVmNameLength || vm.Contains(Separator, StringComparison.Ordinal) || vm.Any(char.IsControl) || vm.Trim() != vm)
        {
            throw OrchestratorException.InvalidArgument(field, $"{OrchestratorException.Quote(vm)} is not a valid VM name (no '/', no control characters, no surrounding spaces, not '.' or '..', at most {MaxVmNameLength} characters)");
        }
    }

    public static void ValidateDiskTarget(string target, string field = "disk")
    {
        if (string.IsNullOrWhiteSpace(target) || !TargetPattern().IsMatch(target))
        {
            throw OrchestratorException.InvalidArgument(field, $"{OrchestratorException.Quote(target)} is not a valid disk target (like vda, sdb, hdc)");
        }
    }

    /// <summary>Parses <c>host/vm</c>; throws an InvalidArgument naming <paramref name="field"/>.</summary>
    public static (string Host, string Vm) ParseVm(string? key, string field = "key")
    {
        var parts = Split(key, 2, field, "HOST/VM");
        ValidateHost(parts[0], field);
        ValidateVmName(parts[1], field);
        return (parts[0], parts[1]);
    }

    /// <summary>Parses <c>host/vm/disk</c>; throws an InvalidArgument naming <paramref name="field"/>.</summary>
    public static (string Host, string Vm, string Disk) ParseDisk(string? key, string field = "key")
    {
        var parts = Split(key, 3, field, "HOST/VM/DISK");
        ValidateHost(parts[0], field);
        ValidateVmName(parts[1], field);
        ValidateDiskTarget(parts[2], field);
        return (parts[0], parts[1], parts[2]);
    }

    /// <summary>Longest key of any shape: host (63), VM name (200), disk or run id (64) and the separators.</summary>
    public const int MaxKeyLength = 63 + 1 + MaxVmNameLength + 1 + 64;

    private static string[] Split(string? key, int count, string field, string shape)
    {
        if (string.IsNullOrWhiteSpace(key))
        {
            throw OrchestratorException.InvalidArgument(field, $"a key of the form {shape} is required");
        }

        if (key.Length > MaxKeyLength)
        {
            throw OrchestratorException.InvalidArgument(field, $"{OrchestratorException.Quote(key)} is too long for a key of the form {shape} (at most {MaxKeyLength} characters)");
        }

        var parts = key.Split(Separator);
        if (parts.Length != count || parts.Any(string.IsNullOrEmpty))
        {
            throw OrchestratorException.InvalidArgument(field, $"{OrchestratorException.Quote(key)} is not of the form {shape}");
        }

        return parts;
    }

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\\z")]
    private static partial Regex HostPattern();

    [GeneratedRegex("^[a-z]{1,4}[a-z0-9]{0,8}\\z")]
    private static partial Regex TargetPattern();
}
