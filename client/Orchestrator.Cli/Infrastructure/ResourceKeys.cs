using System.CommandLine;
using System.CommandLine.Parsing;

namespace Orchestrator.Cli.Infrastructure;

/// <summary>A VM key, "host/vm", as the server spells it.</summary>
internal readonly record struct VmKey(string Host, string Vm)
{
    public override string ToString() => $"{Host}/{Vm}";
}

/// <summary>A disk key, "host/vm/disk", as the server spells it.</summary>
internal readonly record struct DiskKey(string Host, string Vm, string Disk)
{
    public override string ToString() => $"{Host}/{Vm}/{Disk}";
}

/// <summary>A backup run key, "host/vm/run", as the server spells it; the run id starts with "b-".</summary>
internal readonly record struct RunKey(string Host, string Vm, string Run)
{
    public override string ToString() => $"{Host}/{Vm}/{Run}";
}

/// <summary>
/// Client-side checks of the keys in arguments, so a malformed key is a usage error (exit 2) with a message
/// that names the argument, and no call is made.
/// </summary>
internal static class ResourceKeys
{
    public const string VmKeyName = "HOST/VM";
    public const string DiskKeyName = "HOST/VM/DISK";
    public const string RunKeyName = "HOST/VM/RUN";
    public const string RunKeyExample = "kvm-01/web-1/b-20261126-210000-3f9a1c";

    /// <summary>The longest run id the server accepts.</summary>
    private const int MaxRunIdLength = 64;

    public static bool TryParseVmKey(string text, out VmKey key, out string error)
    {
        key = default;
        if (!TrySplit(text, 2, VmKeyName, "kvm-01/web-1", out string[] parts, out error))
        {
            return false;
        }

        key = new VmKey(parts[0], parts[1]);
        return true;
    }

    public static bool TryParseDiskKey(string text, out DiskKey key, out string error)
    {
        key = default;
        if (!TrySplit(text, 3, DiskKeyName, "kvm-01/web-1/vda", out string[] parts, out error))
        {
            return false;
        }

        key = new DiskKey(parts[0], parts[1], parts[2]);
        return true;
    }

    /// <summary>
    /// A run key: 3 parts like a disk key, and a run id as the server makes them ("b-", then ASCII letters,
    /// digits and '-', at most 64 characters).
    /// </summary>
    public static bool TryParseRunKey(string text, out RunKey key, out string error)
    {
        key = default;
        if (!TrySplit(text, 3, RunKeyName, RunKeyExample, out string[] parts, out error))
        {
            return false;
        }

        string run = parts[2];
        if (!run.StartsWith("b-", StringComparison.Ordinal)
            || run.Length > MaxRunIdLength
            || !run.All(c => char.IsAsciiLetterOrDigit(c) || c == '-'))
        {
            error = $"argument {RunKeyName}: '{run}' is not a backup run id (b- then letters, digits and '-', "
                + $"at most {MaxRunIdLength} characters), e.g. {RunKeyExample}";
            return false;
        }

        key = new RunKey(parts[0], parts[1], run);
        return true;
    }

    /// <summary>A name for a new VM (restore --as): not empty, no '/', no surrounding spaces.</summary>
    public static bool TryParseVmName(string text, string optionName, out string error)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            error = $"{optionName}: the VM name is empty";
            return false;
        }

        if (text.Contains('/', StringComparison.Ordinal) || text.Trim().Length != text.Length)
        {
            error = $"{optionName}: '{text}' is not a VM name (no '/', no leading or trailing spaces), e.g. web-1-restored";
            return false;
        }

        error = "";
        return true;
    }

    /// <summary>A host name for --host: not empty, no '/'.</summary>
    public static bool TryParseHostName(string text, string optionName, out string error)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            error = $"{optionName}: the host name is empty";
            return false;
        }

        if (text.Contains('/', StringComparison.Ordinal))
        {
            error = $"{optionName}: '{text}' is not a host name (a host name has no '/'), e.g. kvm-01";
            return false;
        }

        error = "";
        return true;
    }

    public static Argument<VmKey> VmKeyArgument(string description) => new(VmKeyName)
    {
        Description = description,
        CustomParser = result => Parse<VmKey>(result, TryParseVmKey),
    };

    public static Argument<DiskKey> DiskKeyArgument(string description) => new(DiskKeyName)
    {
        Description = description,
        CustomParser = result => Parse<DiskKey>(result, TryParseDiskKey),
    };

    public static Argument<RunKey> RunKeyArgument(string description) => new(RunKeyName)
    {
        Description = description,
        CustomParser = result => Parse<RunKey>(result, TryParseRunKey),
    };

    private delegate bool TryParse<T>(string text, out T key, out string error);

    private static T Parse<T>(ArgumentResult result, TryParse<T> tryParse)
        where T : struct
    {
        string text = result.Tokens.Count > 0 ? result.Tokens[0].Value : "";
        if (tryParse(text, out T key, out string error))
        {
            return key;
        }

        result.AddError(error);
        return default;
    }

    private static bool TrySplit(string text, int count, string name, string example, out string[] parts, out string error)
    {
        parts = text.Split('/');
        if (parts.Length != count || parts.Any(string.IsNullOrWhiteSpace))
        {
            error = $"argument {name}: '{text}' must be exactly {count} non-empty parts separated by '/', e.g. {example}";
            return false;
        }

        error = "";
        return true;
    }
}
