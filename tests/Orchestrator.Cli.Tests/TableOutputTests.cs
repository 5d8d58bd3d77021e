using Orchestrator.Cli.Output;
using Orchestrator.Cli.Tests.Fakes;
using Orchestrator.Cli.Views;

namespace Orchestrator.Cli.Tests;

public sealed class TableOutputTests
{
    private static string[] Lines(string text) => text.Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);

    [Fact]
    public void WriteTo_AlignsColumnsTwoSpacesApart_RightAlignsNumbers_NoTrailingSpaces()
    {
        var table = new TableWriter(new TableColumn("NAME"), new TableColumn("VMS", AlignRight: true), new TableColumn("NOTE"))
            .AddRow("kvm-01", "12", "ok")
            .AddRow("k2", "3", "a longer note");
        var writer = new StringWriter();

        table.WriteTo(writer, color: false);

        Assert.Equal(
            [
                "NAME    VMS  NOTE",
                "kvm-01   12  ok",
                "k2        3  a longer note",
            ],
            Lines(writer.ToString()));
    }

    [Fact]
    public void WriteTo_EmptyCell_IsADash()
    {
        var writer = new StringWriter();

        new TableWriter(new TableColumn("A"), new TableColumn("B")).AddRow(null, "").WriteTo(writer, color: false);

        Assert.Equal("-  -", Lines(writer.ToString())[1]);
    }

    [Fact]
    public void WriteTo_ColorsOff_WritesNoEscapeSequences()
    {
        var writer = new StringWriter();

        HostView.WriteTable(HostView.FromList([Samples.OnlineHost(), Samples.OfflineHost()]), writer, color: false);

        Assert.DoesNotContain('\u001b', writer.ToString());
    }

    [Fact]
    public void WriteTo_ColorsOn_MakesOnlyTheHeaderBold()
    {
        var writer = new StringWriter();

        new TableWriter(new TableColumn("NAME")).AddRow("kvm-01").WriteTo(writer, color: true);

        string[] lines = Lines(writer.ToString());
        Assert.Equal("\u001b[1mNAME\u001b[0m", lines[0]);
        Assert.Equal("kvm-01", lines[1]);
    }

    [Fact]
    public void AddRow_WrongCellCount_Throws()
    {
        Assert.Throws<ArgumentException>(() => new TableWriter(new TableColumn("A")).AddRow("1", "2"));
    }

    [Fact]
    public void HostTable_ShowsStatusCountsAndSyncError()
    {
        var writer = new StringWriter();

        HostView.WriteTable(HostView.FromList([Samples.OfflineHost(), Samples.OnlineHost()]), writer, color: false);

        string[] lines = Lines(writer.ToString());
        Assert.Equal(3, lines.Length);
        Assert.StartsWith("NAME    STATUS   VMS  DRIVER", lines[0], StringComparison.Ordinal);
        Assert.StartsWith("kvm-01  online     2  libvirt", lines[1], StringComparison.Ordinal);
        Assert.Contains("2025-01-31T22:04:05Z", lines[1], StringComparison.Ordinal);
        Assert.StartsWith("kvm-02  offline    1  libvirt", lines[2], StringComparison.Ordinal);
        Assert.EndsWith("connection reset by peer", lines[2], StringComparison.Ordinal);
    }

    [Fact]
    public void VmTable_ShowsStateResourcesDisksAndLabels()
    {
        var absent = Samples.ShutOffVm();
        absent.Present = false;
        var writer = new StringWriter();

        VmView.WriteTable(VmView.FromList([Samples.RunningVm(), absent]), writer, color: false);

        string[] lines = Lines(writer.ToString());
        Assert.Equal("HOST    NAME   STATE    VCPUS   MEMORY  DISKS    LABELS", lines[0]);
        Assert.Equal("kvm-01  db-1   absent       1  512 MiB  -        -", lines[1]);
        Assert.Equal("kvm-01  web-1  running      4    4 GiB  vda,vdb  env=prod,tier=web", lines[2]);
    }

    [Fact]
    public void VmTable_NoVms_SaysSo()
    {
        var writer = new StringWriter();

        VmView.WriteTable([], writer, color: false);

        Assert.Equal("No VMs." + Environment.NewLine, writer.ToString());
    }

    [Fact]
    public void VmDetails_ListsPropertiesThenDisks()
    {
        var writer = new StringWriter();

        VmView.WriteDetails(VmView.From(Samples.RunningVm()), writer, color: false);

        string[] lines = Lines(writer.ToString());
        Assert.Contains("Key:        kvm-01/web-1", lines);
        Assert.Contains("State:      running", lines);
        Assert.Contains("Memory:     4 GiB", lines);
        Assert.Contains("Labels:     env=prod,tier=web", lines);
        Assert.Contains("Last sync:  2025-01-31T22:04:05Z", lines);
        Assert.Contains("DISK  FORMAT  CHAIN  SOURCE", lines);
        Assert.Contains("vda   qcow2       2  /var/lib/libvirt/images/web-1.qcow2", lines);
    }

    [Fact]
    public void ChainDetails_ListsLayersActiveFirstWithRoles()
    {
        var writer = new StringWriter();

        DiskChainView.WriteDetails(DiskChainView.From(Samples.Chain()), writer, color: false);

        string[] lines = Lines(writer.ToString());
        Assert.Contains("Key:              kvm-01/web-1/vda", lines);
        Assert.Contains("Layers:           2", lines);
        int header = Array.IndexOf(lines, "DEPTH  FORMAT  ROLE    PATH");
        Assert.True(header > 0);
        Assert.Equal("    0  qcow2   active  /var/lib/libvirt/images/web-1.orch-r42.qcow2", lines[header + 1]);
        Assert.Equal("    1  qcow2   base    /var/lib/libvirt/images/web-1.qcow2", lines[header + 2]);
    }

    [Theory]
    [InlineData(0L, "0 KiB")]
    [InlineData(512L, "512 KiB")]
    [InlineData(1024L, "1 MiB")]
    [InlineData(1536L, "1.5 MiB")]
    [InlineData(4L * 1024 * 1024, "4 GiB")]
    [InlineData(3L * 1024 * 1024 * 1024, "3 TiB")]
    public void Kib_UsesTheLargestBinaryUnit(long kib, string expected)
    {
        Assert.Equal(expected, TextFormat.Kib(kib));
    }
}
