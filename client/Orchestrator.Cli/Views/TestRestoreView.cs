using System.Globalization;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Output;

namespace Orchestrator.Cli.Views;

/// <summary>A test restore as <c>backup test</c>, <c>backup show</c> and <c>vm show</c> print it. The JSON shape is documented in README.md.</summary>
internal sealed record TestRestoreView(
    string Id,
    string Key,
    string Host,
    string Domain,
    string Probe,
    string Outcome,
    DateTime? StartedAt,
    DateTime? EndedAt,
    double RestoreSeconds,
    double BootSeconds,
    string Reason,
    bool CleanedUp,
    string? Policy)
{
    public static TestRestoreView? From(TestRestore? test) => test is null ? null : new(
        test.Id,
        test.Key,
        test.Host,
        test.Domain,
        test.Probe,
        EnumNames.Of(test.Outcome),
        Timestamps.ToUtc(test.StartedAt),
        Timestamps.ToUtc(test.EndedAt),
        Math.Round(test.RestoreSeconds, 3),
        Math.Round(test.BootSeconds, 3),
        test.Reason,
        test.CleanedUp,
        test.Policy.Length == 0 ? null : test.Policy);

    public static void WriteDetails(TestRestoreView test, TextWriter writer, bool color) =>
        Properties(test, new PropertyListWriter()).WriteTo(writer, color);

    public static PropertyListWriter Properties(TestRestoreView test, PropertyListWriter list, string prefix = "") => list
        .Add(prefix + "Test", test.Id)
        .Add(prefix + "Run", test.Key)
        .Add(prefix + "Outcome", test.Outcome)
        .Add(prefix + "Reason", test.Reason)
        .Add(prefix + "Probe", test.Probe)
        .Add(prefix + "Throwaway VM", $"{test.Host}/{test.Domain} ({(test.CleanedUp ? "destroyed, images deleted" : "clean-up pending")})")
        .Add(prefix + "Restore", Seconds(test.RestoreSeconds))
        .Add(prefix + "Boot to probe", Seconds(test.BootSeconds))
        .Add(prefix + "Started", TextFormat.Timestamp(test.StartedAt))
        .Add(prefix + "Ended", TextFormat.Timestamp(test.EndedAt));

    private static string Seconds(double seconds) => seconds.ToString("0.0", CultureInfo.InvariantCulture) + " s";
}
