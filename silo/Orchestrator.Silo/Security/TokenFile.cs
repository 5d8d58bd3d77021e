using System.Globalization;
using System.Text.RegularExpressions;

namespace Orchestrator.Silo.Security;

/// <summary>One bearer token the silo accepts: the SHA-256 of the token (never the token), its role and name.</summary>
internal sealed record TokenEntry(byte[] Hash, Role Role, string Name, int Line);

/// <summary>A parsed tokens file: its entries, or the problems, each naming the file and the line.</summary>
internal sealed record TokenFileResult(IReadOnlyList<TokenEntry> Entries, IReadOnlyList<string> Errors)
{
    /// <summary>The file's modification time and size when it was read (taken before reading); null when missing.</summary>
    public (DateTime Written, long Length)? Stamp { get; init; }
}

/// <summary>
/// The tokens file (Orchestrator:Security:TokensFile): one token per line as
/// <c>sha256:&lt;64 hex digits&gt; &lt;role&gt; &lt;name&gt;</c>, separated by spaces or tabs; <c>#</c> starts a comment;
/// blank lines are ignored. Names are unique (they appear in the audit log); so are hashes.
/// </summary>
internal static partial class TokenFile
{
    public const string Prefix = "sha256:";
    public const string Format = "sha256:<64 hex digits> <role> <name>";

    /// <summary>Reads and parses <paramref name="path"/>; a file that cannot be read is one error naming it.</summary>
    public static TokenFileResult Read(string path)
    {
        var stamp = StampOf(path);
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return new TokenFileResult([], [$"{path}: cannot read the tokens file: {e.Message}"]);
        }

        return Parse(text, path) with { Stamp = stamp };
    }

    /// <summary>Modification time and size: what tells a changed file from the one read before.</summary>
    public static (DateTime Written, long Length)? StampOf(string path)
    {
        var info = new FileInfo(path);
        return info.Exists ? (info.LastWriteTimeUtc, info.Length) : null;
    }

    public static TokenFileResult Parse(string text, string fileName)
    {
        var entries = new List<TokenEntry>();
        var errors = new List<string>();
        var names = new Dictionary<string, int>(StringComparer.Ordinal);
        var hashes = new Dictionary<string, int>(StringComparer.Ordinal);
        var lines = text.Split('\n');
        for (var i = 0; i < lines.Length; i++)
        {
            var number = i + 1;
            var line = lines[i];
            var comment = line.IndexOf('#', StringComparison.Ordinal);
            if (comment >= 0)
            {
                line = line[..comment];
            }

            var fields = line.Split([' ', '\t', '\r'], StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length == 0)
            {
                continue;
            }

            void Error(string message) => errors.Add($"{fileName}:{number}: {message}");

            if (fields.Length != 3)
            {
                Error($"expected '{Format}', found {fields.Length} field{(fields.Length == 1 ? "" : "s")}");
                continue;
            }

            var (hashField, roleField, name) = (fields[0], fields[1], fields[2]);
            byte[]? hash = null;
            if (!hashField.StartsWith(Prefix, StringComparison.OrdinalIgnoreCase))
            {
                Error($"the first field must be {Prefix}<64 hex digits>: the SHA-256 of the token, never the token itself");
            }
            else if (hashField.Length != Prefix.Length + 64 || !HexDigits().IsMatch(hashField.AsSpan(Prefix.Length)))
            {
                Error($"'{hashField[..Math.Min(hashField.Length, Prefix.Length + 8)]}...' is not {Prefix} followed by exactly 64 hex digits");
            }
            else
            {
                hash = Convert.FromHexString(hashField.AsSpan(Prefix.Length));
            }

            var roleKnown = Roles.TryParse(roleField, out var role);
            if (!roleKnown)
            {
                Error($"unknown role '{roleField}' (expected {Roles.Names})");
            }

            var nameValid = NamePattern().IsMatch(name);
            if (!nameValid)
            {
                Error($"name '{name}' must be 1-64 of letters, digits, '.', '_', '-', '@'");
            }
            else if (names.TryGetValue(name, out var first))
            {
                Error($"name '{name}' is already used on line {first.ToString(CultureInfo.InvariantCulture)}");
                nameValid = false;
            }
            else
            {
                names[name] = number;
            }

            if (hash is not null)
            {
                var hex = Convert.ToHexString(hash);
                if (hashes.TryGetValue(hex, out var firstHash))
                {
                    Error($"the same token hash as line {firstHash.ToString(CultureInfo.InvariantCulture)}");
                    hash = null;
                }
                else
                {
                    hashes[hex] = number;
                }
            }

            if (hash is not null && roleKnown && nameValid)
            {
                entries.Add(new TokenEntry(hash, role, name, number));
            }
        }

        return new TokenFileResult(entries, errors);
    }

    [GeneratedRegex("^[0-9a-fA-F]{64}$")]
    private static partial Regex HexDigits();

    [GeneratedRegex("^[A-Za-z0-9._@-]{1,64}$")]
    private static partial Regex NamePattern();
}
