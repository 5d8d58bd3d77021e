using Orchestrator.Api.V1;
using Orchestrator.Cli.Output;

namespace Orchestrator.Cli.Views;

/// <summary>What <c>backup verify</c> found, set by set. The JSON shape is documented in README.md.</summary>
internal sealed record VerifyView(string Key, string Host, bool Passed, IReadOnlyList<VerifiedSetView> Sets)
{
    public static VerifyView From(VerifyBackupResponse response) => new(
        response.Key,
        response.Host,
        response.Passed,
        [.. response.Sets.Select(s => new VerifiedSetView(
            s.Run,
            s.SetPath.Length == 0 ? null : s.SetPath,
            s.Level.Length == 0 ? null : s.Level,
            s.ChainIndex < 0 ? null : s.ChainIndex,
            s.Passed,
            [.. s.Checks],
            s.Error.Length == 0 ? null : s.Error))]);

    public static void WriteDetails(VerifyView verify, TextWriter writer, bool color)
    {
        new PropertyListWriter()
            .Add("Run", verify.Key)
            .Add("Read on host", verify.Host)
            .Add("Passed", TextFormat.YesNo(verify.Passed))
            .WriteTo(writer, color);
        writer.WriteLine();
        var sets = new TableWriter(new TableColumn("SET"), new TableColumn("LEVEL"), new TableColumn("CHAIN INDEX"), new TableColumn("RESULT"));
        foreach (var set in verify.Sets)
        {
            sets.AddRow(set.Run, set.Level ?? "-", set.ChainIndex?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-", set.Passed ? "passed" : $"FAILED: {set.Error}");
        }

        sets.WriteTo(writer, color);
    }
}

/// <summary>One set of a verified chain: what was checked and whether it passed.</summary>
internal sealed record VerifiedSetView(string Run, string? SetPath, string? Level, int? ChainIndex, bool Passed, IReadOnlyList<string> Checks, string? Error);
