using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;
using Orchestrator.Cli.Views;

namespace Orchestrator.Cli.Output;

/// <summary>
/// Source-generated serializers for every JSON document the CLI prints. A new command adds its view types
/// here. The shapes are a promise to scripts (README.md documents them): add fields, never rename or remove.
/// </summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    WriteIndented = true,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    Converters = [typeof(UtcTimestampConverter)])]
[JsonSerializable(typeof(IReadOnlyList<HostView>))]
[JsonSerializable(typeof(IReadOnlyList<VmView>))]
[JsonSerializable(typeof(VmView))]
[JsonSerializable(typeof(DiskChainView))]
[JsonSerializable(typeof(CheckpointView))]
[JsonSerializable(typeof(IReadOnlyList<CheckpointView>))]
[JsonSerializable(typeof(CheckpointRevertView))]
[JsonSerializable(typeof(CheckpointDeletedView))]
[JsonSerializable(typeof(CheckpointScheduleView))]
[JsonSerializable(typeof(IReadOnlyList<CheckpointScheduleView>))]
[JsonSerializable(typeof(IReadOnlyList<BackupRunView>))]
[JsonSerializable(typeof(BackupRunView))]
[JsonSerializable(typeof(RestoreView))]
[JsonSerializable(typeof(TestRestoreView))]
[JsonSerializable(typeof(VerifyView))]
[JsonSerializable(typeof(OverlayRepairView))]
[JsonSerializable(typeof(PolicyView))]
[JsonSerializable(typeof(IReadOnlyList<PolicyView>))]
[JsonSerializable(typeof(PolicyApplyView))]
[JsonSerializable(typeof(PolicyDeletedView))]
[JsonSerializable(typeof(PolicyRunView))]
[JsonSerializable(typeof(IReadOnlyList<PolicyRunView>))]
[JsonSerializable(typeof(ComplianceView))]
[JsonSerializable(typeof(OverlaysView))]
internal sealed partial class CliJsonContext : JsonSerializerContext
{
    /// <summary>
    /// The context the CLI writes with: the options above plus relaxed escaping, so paths and labels
    /// keep '+', '&amp;' and non-ASCII letters readable (the output is never embedded in HTML).
    /// </summary>
    public static CliJsonContext Output { get; } = new(CreateOptions(indented: true));

    /// <summary>The same, one line per document: JSON Lines for streams (<c>backup watch</c>, <c>policy watch</c> with <c>--format json</c>).</summary>
    public static CliJsonContext Compact { get; } = new(CreateOptions(indented: false));

    private static JsonSerializerOptions CreateOptions(bool indented) => new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = indented,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        Converters = { new UtcTimestampConverter() },
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };
}
