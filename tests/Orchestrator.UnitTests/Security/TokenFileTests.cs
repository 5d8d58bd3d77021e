using System.Security.Cryptography;
using System.Text;
using Orchestrator.Silo.Security;

namespace Orchestrator.UnitTests.Security;

public sealed class TokenFileTests
{
    internal static string HashLine(string token, string role, string name) =>
        $"sha256:{Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(token)))} {role} {name}";

    [Fact]
    public void Parse_GoodLinesCommentsAndBlanks_ReadsEveryToken()
    {
        var text = string.Join('\n',
            "# tokens of the orchestrator",
            "",
            HashLine("t-viewer", "viewer", "dash-board"),
            "   " + HashLine("t-operator", "operator", "ops-bot") + "\t# nightly jobs",
            "\t",
            $"SHA256:{Convert.ToHexString(SHA256.HashData("t-admin"u8))} Admin alice@example.org\r", // any case; CRLF
            "");

        var result = TokenFile.Parse(text, "tokens");

        Assert.Empty(result.Errors);
        Assert.Equal(["dash-board", "ops-bot", "alice@example.org"], result.Entries.Select(e => e.Name));
        Assert.Equal([Role.Viewer, Role.Operator, Role.Admin], result.Entries.Select(e => e.Role));
        Assert.Equal([3, 4, 6], result.Entries.Select(e => e.Line));
        Assert.Equal(SHA256.HashData("t-operator"u8), result.Entries[1].Hash);
    }

    [Theory]
    [InlineData("sha256:abc viewer v", "tokens:1: 'sha256:abc...' is not sha256: followed by exactly 64 hex digits")]
    [InlineData("my-secret-token viewer v", "tokens:1: the first field must be sha256:<64 hex digits>: the SHA-256 of the token, never the token itself")]
    [InlineData("sha256:zz00000000000000000000000000000000000000000000000000000000000000 viewer v", "tokens:1: 'sha256:zz000000...' is not sha256: followed by exactly 64 hex digits")]
    [InlineData("sha256:0000000000000000000000000000000000000000000000000000000000000000 root v", "tokens:1: unknown role 'root' (expected viewer, operator, admin)")]
    [InlineData("sha256:0000000000000000000000000000000000000000000000000000000000000000 viewer", "tokens:1: expected 'sha256:<64 hex digits> <role> <name>', found 2 fields")]
    [InlineData("sha256:0000000000000000000000000000000000000000000000000000000000000000 viewer two words", "tokens:1: expected 'sha256:<64 hex digits> <role> <name>', found 4 fields")]
    [InlineData("sha256:0000000000000000000000000000000000000000000000000000000000000000 viewer bad/name", "tokens:1: name 'bad/name' must be 1-64 of letters, digits, '.', '_', '-', '@'")]
    public void Parse_BadLine_NamesFileLineAndProblem(string line, string expected)
    {
        var result = TokenFile.Parse(line, "tokens");

        Assert.Equal(expected, Assert.Single(result.Errors));
        Assert.Empty(result.Entries);
    }

    [Fact]
    public void Parse_DuplicateNameAndHash_NameTheEarlierLine()
    {
        var text = string.Join('\n',
            HashLine("a", "viewer", "bot"),
            "# a comment",
            HashLine("b", "admin", "bot"),
            HashLine("a", "operator", "other"));

        var result = TokenFile.Parse(text, "/etc/orchestrator/tokens");

        Assert.Equal(
            ["/etc/orchestrator/tokens:3: name 'bot' is already used on line 1", "/etc/orchestrator/tokens:4: the same token hash as line 1"],
            result.Errors);
        Assert.Equal(["bot"], result.Entries.Select(e => e.Name));
    }

    [Fact]
    public void Parse_SeveralBadLines_ReportsEachWithItsLine()
    {
        var text = string.Join('\n', HashLine("a", "viewer", "a"), "oops", HashLine("c", "superuser", "c"));

        var result = TokenFile.Parse(text, "tokens");

        Assert.Equal(2, result.Errors.Count);
        Assert.StartsWith("tokens:2: ", result.Errors[0], StringComparison.Ordinal);
        Assert.StartsWith("tokens:3: unknown role 'superuser'", result.Errors[1], StringComparison.Ordinal);
    }

    [Fact]
    public void Read_MissingFile_OneErrorNamingIt()
    {
        var path = Path.Combine(Path.GetTempPath(), $"no-such-tokens-{Guid.NewGuid():N}");

        var result = TokenFile.Read(path);

        Assert.StartsWith($"{path}: cannot read the tokens file", Assert.Single(result.Errors), StringComparison.Ordinal);
    }

    [Fact]
    public void ExampleFile_Parses()
    {
        var example = Path.Combine(FindRoot(), "deploy", "examples", "tokens.example");

        var result = TokenFile.Read(example);

        Assert.Empty(result.Errors);
        Assert.Equal([Role.Viewer, Role.Operator, Role.Admin], result.Entries.Select(e => e.Role).Distinct().Order());
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Orchestrator.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("Orchestrator.sln not found");
    }
}
