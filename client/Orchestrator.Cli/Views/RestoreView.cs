using Orchestrator.Api.V1;
using Orchestrator.Cli.Output;

namespace Orchestrator.Cli.Views;

/// <summary>What <c>restore</c> made. The JSON shape is documented in README.md.</summary>
internal sealed record RestoreView(string NewName, IReadOnlyList<string> Images, bool Defined, string? Uuid, IReadOnlyList<string> Changes, string? Host, bool Started)
{
    public static RestoreView From(RestoreResponse response) => new(
        response.NewName,
        [.. response.Images],
        response.Defined,
        response.Uuid.Length == 0 ? null : response.Uuid,
        [.. response.Changes],
        response.Host.Length == 0 ? null : response.Host,
        response.Started);

    public static void WriteDetails(RestoreView restore, TextWriter writer, bool color)
    {
        new PropertyListWriter()
            .Add("New VM", restore.NewName)
            .Add("Host", restore.Host)
            .Add("Defined", TextFormat.YesNo(restore.Defined))
            .Add("Started", TextFormat.YesNo(restore.Started))
            .Add("UUID", restore.Uuid)
            .WriteTo(writer, color);
        writer.WriteLine();
        if (restore.Images.Count == 0)
        {
            writer.WriteLine("No images.");
            return;
        }

        var images = new TableWriter(new TableColumn("IMAGE"));
        foreach (string image in restore.Images)
        {
            images.AddRow(image);
        }

        images.WriteTo(writer, color);
        if (restore.Changes.Count > 0)
        {
            // What the new definition no longer shares with the original.
            writer.WriteLine();
            var changes = new TableWriter(new TableColumn("REWRITTEN OR DROPPED"));
            foreach (string change in restore.Changes)
            {
                changes.AddRow(change);
            }

            changes.WriteTo(writer, color);
        }
    }
}
