using System.Globalization;
using Orchestrator.Api.V1;
using Orchestrator.Cli.Output;

namespace Orchestrator.Cli.Views;

/// <summary>A checkpoint as <c>checkpoint create</c> and <c>checkpoint list</c> print it. The JSON shape is documented in README.md.</summary>
internal sealed record CheckpointView(
    string Key,
    string Name,
    DateTime? CreatedAt,
    bool WithMemory,
    long? SizeBytes,
    double? PauseMs,
    string PauseSource,
    string Origin,
    string State,
    double? DurationMs)
{
    public static CheckpointView From(string key, Checkpoint checkpoint) => new(
        key,
        checkpoint.Name,
        Timestamps.ToUtc(checkpoint.CreatedAt),
        checkpoint.WithMemory,
        checkpoint.HasSizeBytes ? checkpoint.SizeBytes : null,
        checkpoint.HasPauseMs ? Math.Round(checkpoint.PauseMs, 1) : null,
        EnumNames.Of(checkpoint.PauseSource),
        EnumNames.Of(checkpoint.Origin),
        EnumNames.Of(checkpoint.State),
        checkpoint.HasDurationMs ? Math.Round(checkpoint.DurationMs, 1) : null);

    /// <summary>The server's order (oldest first, as the hypervisor has them).</summary>
    public static IReadOnlyList<CheckpointView> FromList(string key, IEnumerable<Checkpoint> checkpoints) =>
        [.. checkpoints.Select(c => From(key, c))];

    public static void WriteTable(IReadOnlyList<CheckpointView> checkpoints, TextWriter writer, bool color)
    {
        if (checkpoints.Count == 0)
        {
            writer.WriteLine("No checkpoints.");
            return;
        }

        var table = new TableWriter(
            new TableColumn("NAME"),
            new TableColumn("CREATED"),
            new TableColumn("MEMORY"),
            new TableColumn("SIZE", AlignRight: true),
            new TableColumn("PAUSE", AlignRight: true),
            new TableColumn("ORIGIN"),
            new TableColumn("STATE"));
        foreach (CheckpointView checkpoint in checkpoints)
        {
            table.AddRow(
                checkpoint.Name,
                TextFormat.Timestamp(checkpoint.CreatedAt),
                TextFormat.YesNo(checkpoint.WithMemory),
                checkpoint.SizeBytes is { } size ? TextFormat.Bytes(size) : null,
                Milliseconds(checkpoint.PauseMs),
                checkpoint.Origin,
                checkpoint.State);
        }

        table.WriteTo(writer, color);
    }

    public static void WriteDetails(CheckpointView checkpoint, TextWriter writer, bool color) =>
        new PropertyListWriter()
            .Add("VM", checkpoint.Key)
            .Add("Name", checkpoint.Name)
            .Add("Created", TextFormat.Timestamp(checkpoint.CreatedAt))
            .Add("Memory", checkpoint.WithMemory ? "yes (disk + memory)" : "no (disk only)")
            .Add("Pause", checkpoint.PauseMs is null ? null : $"{Milliseconds(checkpoint.PauseMs)} ({checkpoint.PauseSource})")
            .Add("Took", Milliseconds(checkpoint.DurationMs))
            .Add("Origin", checkpoint.Origin)
            .Add("State", checkpoint.State)
            .WriteTo(writer, color);

    internal static string? Milliseconds(double? value) =>
        value is { } ms ? $"{ms.ToString("0", CultureInfo.InvariantCulture)} ms" : null;
}

/// <summary>What <c>checkpoint revert</c> prints.</summary>
internal sealed record CheckpointRevertView(string Key, string Name, string PowerState, double DurationMs)
{
    public static CheckpointRevertView From(string key, RevertCheckpointResponse response) =>
        new(key, response.Name, EnumNames.Of(response.PowerState), Math.Round(response.DurationMs, 1));

    public static void WriteDetails(CheckpointRevertView view, TextWriter writer, bool color) =>
        new PropertyListWriter()
            .Add("VM", view.Key)
            .Add("Reverted to", view.Name)
            .Add("State", view.PowerState)
            .Add("Took", CheckpointView.Milliseconds(view.DurationMs))
            .WriteTo(writer, color);
}

/// <summary>What <c>checkpoint delete</c> and <c>checkpoint schedule delete</c> print.</summary>
internal sealed record CheckpointDeletedView(string Key, string? Name, bool Deleted)
{
    public static void WriteText(CheckpointDeletedView view, TextWriter writer, bool color) =>
        writer.WriteLine(view.Name is { } name
            ? $"Deleted checkpoint {name} of {view.Key}."
            : view.Deleted ? $"Removed the checkpoint schedule of {view.Key}; its checkpoints stay." : $"{view.Key} had no checkpoint schedule.");
}
