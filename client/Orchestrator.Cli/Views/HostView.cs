using Orchestrator.Api.V1;
using Orchestrator.Cli.Output;

namespace Orchestrator.Cli.Views;

/// <summary>A host as <c>host list</c> prints it. The JSON shape is documented in README.md.</summary>
internal sealed record HostView(
    string Name,
    string Uri,
    bool Online,
    string? Silo,
    string? Driver,
    string? LibvirtVersion,
    string? HypervisorVersion,
    int VmCount,
    DateTime? LastSync,
    string? LastSyncError)
{
    public static HostView From(Host host) => new(
        host.Name,
        host.Uri,
        host.Online,
        NullIfEmpty(host.Silo),
        NullIfEmpty(host.Driver),
        NullIfEmpty(host.LibvirtVersion),
        NullIfEmpty(host.HypervisorVersion),
        host.VmCount,
        Timestamps.ToUtc(host.LastSync),
        NullIfEmpty(host.LastSyncError));

    /// <summary>Hosts sorted by name, so output is stable whatever order the server answers in.</summary>
    public static IReadOnlyList<HostView> FromList(IEnumerable<Host> hosts) =>
        [.. hosts.Select(From).OrderBy(h => h.Name, StringComparer.Ordinal)];

    public static void WriteTable(IReadOnlyList<HostView> hosts, TextWriter writer, bool color)
    {
        if (hosts.Count == 0)
        {
            writer.WriteLine("No hosts.");
            return;
        }

        var table = new TableWriter(
            new TableColumn("NAME"),
            new TableColumn("STATUS"),
            new TableColumn("VMS", AlignRight: true),
            new TableColumn("DRIVER"),
            new TableColumn("LIBVIRT"),
            new TableColumn("SILO"),
            new TableColumn("LAST SYNC"),
            new TableColumn("SYNC ERROR"));
        foreach (HostView host in hosts)
        {
            table.AddRow(
                host.Name,
                host.Online ? "online" : "offline",
                host.VmCount.ToString(System.Globalization.CultureInfo.InvariantCulture),
                host.Driver,
                host.LibvirtVersion,
                host.Silo,
                TextFormat.Timestamp(host.LastSync),
                host.LastSyncError);
        }

        table.WriteTo(writer, color);
    }

    private static string? NullIfEmpty(string value) => value.Length == 0 ? null : value;
}
