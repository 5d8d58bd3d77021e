using System.Diagnostics;
using Grpc.Core;
using Orchestrator.Api.V1;
using Orchestrator.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace Orchestrator.IntegrationTests.Fleet;

/// <summary>The fleet cluster itself: three hosts seen through the CLI, and every silo's traces reaching the OTLP receiver.</summary>
[Collection(FleetCollection.Name)]
public sealed class FleetClusterTests(FleetFixture fixture, ITestOutputHelper output)
{
    [Fact]
    public async Task Cli_HostAndVmList_SeeFourGuestsOnThreeHostsWithTheirLabels()
    {
        output.WriteLine($"fleet start-up took {fixture.StartupTime.TotalSeconds:0.0} s");
        var hosts = (await fixture.CliJsonAsync("host", "list")).EnumerateArray().ToList();
        Assert.Equal(FleetFixture.HostNames, hosts.Select(h => h.GetProperty("name").GetString()));
        Assert.All(hosts, h => Assert.True(h.GetProperty("online").GetBoolean(), h.ToString()));
        Assert.Equal(3, hosts.Select(h => h.GetProperty("silo").GetString()).Distinct().Count());

        var vms = (await fixture.CliJsonAsync("vm", "list")).EnumerateArray().ToList();
        Assert.Equal(FleetFixture.Guests.Select(g => g.Key).Order(StringComparer.Ordinal), vms.Select(v => v.GetProperty("key").GetString()));
        foreach (var guest in FleetFixture.Guests)
        {
            var vm = vms.Single(v => v.GetProperty("key").GetString() == guest.Key);
            Assert.Equal(guest.Host, vm.GetProperty("host").GetString());
            Assert.Equal("running", vm.GetProperty("power_state").GetString());
            var labels = vm.GetProperty("labels");
            Assert.Equal(FleetFixture.SuiteValue, labels.GetProperty(FleetFixture.SuiteLabel).GetString());
            Assert.Equal(guest.Tier, labels.GetProperty("tier").GetString());
        }
    }

    [Fact]
    public async Task Otlp_EverySilo_ExportsHostSyncSpansUnderItsOwnHostName()
    {
        var spans = await fixture.Otlp.WaitForAsync(
            s => FleetFixture.HostNames.All(h => s.Any(x => x.Name == "host.sync" && x.ServiceInstance == h)),
            TimeSpan.FromSeconds(60),
            "host.sync spans from fa, fb and fc");

        foreach (var host in FleetFixture.HostNames)
        {
            var sync = spans.Where(s => s.Name == "host.sync" && s.ServiceInstance == host).ToList();
            // The resource says which silo sent it, and the span itself which host it synced: the same one.
            Assert.All(sync, s => Assert.Equal(host, s.Host));
            Assert.All(sync, s => Assert.Equal(host, s.Attribute("host")));
            Assert.All(sync, s => Assert.Equal(32, s.TraceId.Length));
            Assert.All(sync, s => Assert.True(s.End >= s.Start, s.ToString()));
        }
    }

    [Fact]
    public async Task Otlp_GrpcCallToOneSilo_TraceContinuesOnTheSiloOfTheVmsHost()
    {
        // A request with our own trace context to fa's silo for a disk of fc's VM: fa serves the gRPC call, fc runs the
        // disk chain grain.
        var traceId = ActivityTraceId.CreateRandom().ToHexString();
        var parent = ActivitySpanId.CreateRandom().ToHexString();
        var fleet = GrpcClients.Fleet(fixture.Entry.GrpcEndpoint);
        var chain = (await fleet.GetDiskChainAsync(new GetDiskChainRequest { Key = "fc/app-1/vda" }, new Metadata { { "traceparent", $"00-{traceId}-{parent}-01" } })).Chain;
        Assert.NotEmpty(chain.Layers);

        // Each process exports its spans as they end: fa's server span ends last, so wait for it explicitly.
        var spans = await fixture.Otlp.WaitForAsync(
            s => s.Any(x => x.TraceId == traceId && x.ServiceInstance == "fa" && x.ParentSpanId == parent) && s.Any(x => x.TraceId == traceId && x.ServiceInstance == "fc"),
            TimeSpan.FromSeconds(60),
            $"fa's server span below {parent} and fc's spans of trace {traceId}");
        var trace = spans.Where(s => s.TraceId == traceId).ToList();
        output.WriteLine(string.Join('\n', trace));

        // fa's server span is the child of our context; fc's spans hang below spans that fa sent (one tree across processes).
        var server = Assert.Single(trace, s => s.ServiceInstance == "fa" && s.ParentSpanId == parent);
        Assert.Contains("GetDiskChain", server.Name + " " + string.Join(' ', server.Attributes.Values), StringComparison.Ordinal);
        var fromFa = trace.Where(s => s.ServiceInstance == "fa").Select(s => s.SpanId).ToHashSet();
        Assert.Contains(trace, s => s.ServiceInstance == "fc" && s.ParentSpanId is { } p && fromFa.Contains(p));
        Assert.DoesNotContain(trace, s => s.ServiceInstance == "fb");
    }
}
