using Google.Protobuf.WellKnownTypes;

namespace Orchestrator.Cli.Views;

internal static class Timestamps
{
    /// <summary>A protobuf timestamp as UTC, or null when the server did not set it.</summary>
    public static DateTime? ToUtc(Timestamp? timestamp) => timestamp?.ToDateTime();
}
