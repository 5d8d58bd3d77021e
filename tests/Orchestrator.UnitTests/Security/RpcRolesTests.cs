using System.Reflection;
using Google.Protobuf.Reflection;
using Grpc.AspNetCore.Server;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Orchestrator.Silo.Hosting;
using Orchestrator.Silo.Security;

namespace Orchestrator.UnitTests.Security;

/// <summary>The role table covers every RPC, so a new RPC cannot be left open (or shut) by accident.</summary>
public sealed class RpcRolesTests
{
    /// <summary>Every method of every service in every .proto compiled into the silo (read from the generated descriptors).</summary>
    private static IEnumerable<string> ProtoMethods() =>
        typeof(RpcRoles).Assembly.GetTypes()
            .Select(t => t.GetProperty("Descriptor", BindingFlags.Public | BindingFlags.Static))
            .Where(p => p?.PropertyType == typeof(FileDescriptor))
            .Select(p => (FileDescriptor)p!.GetValue(null)!)
            .Concat([Grpc.Reflection.V1Alpha.ReflectionReflection.Descriptor, Grpc.Reflection.V1.ReflectionReflection.Descriptor])
            .SelectMany(f => f.Services)
            .SelectMany(s => s.Methods.Select(m => $"/{s.FullName}/{m.Name}"))
            .Distinct();

    /// <summary>Every gRPC method the silo maps (its endpoints, as Kestrel would route them).</summary>
    private static List<string> MappedMethods()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Services.AddGrpc();
        builder.Services.AddGrpcReflection();
        using var app = builder.Build();
        app.MapOrchestratorGrpc(7070);
        return ((IEndpointRouteBuilder)app).DataSources
            .SelectMany(d => d.Endpoints)
            .Select(e => e.Metadata.GetMetadata<GrpcMethodMetadata>())
            .OfType<GrpcMethodMetadata>()
            .Select(m => m.Method.FullName)
            .Distinct()
            .ToList();
    }

    [Fact]
    public void Table_HasAnEntryForEveryRpcOfEveryProtoService()
    {
        var methods = ProtoMethods().ToList();

        Assert.True(methods.Count >= 29, $"expected the orchestrator's services, found {methods.Count} methods");
        Assert.Contains("/orchestrator.v1.BackupService/StartBackup", methods);
        var missing = methods.Where(m => !RpcRoles.Table.ContainsKey(m)).ToList();
        Assert.True(missing.Count == 0, "RPCs without a role in RpcRoles.Table (add each, with the lowest role that may call it): " + string.Join(", ", missing));
    }

    [Fact]
    public void Table_HasAnEntryForEveryMappedMethod()
    {
        var mapped = MappedMethods();

        Assert.Contains("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", mapped);
        Assert.Contains("/orchestrator.v1.PolicyService/ApplyPolicy", mapped);
        var missing = mapped.Where(m => !RpcRoles.Table.ContainsKey(m)).ToList();
        Assert.True(missing.Count == 0, "mapped gRPC methods without a role: " + string.Join(", ", missing));
    }

    [Fact]
    public void Table_HasNoEntryForAMethodThatDoesNotExist()
    {
        var known = ProtoMethods().ToHashSet();

        var stale = RpcRoles.Table.Keys.Where(k => !known.Contains(k)).ToList();
        Assert.True(stale.Count == 0, "RpcRoles.Table names methods no service has: " + string.Join(", ", stale));
    }

    [Fact]
    public void Table_ReadsAreForViewers()
    {
        var reads = RpcRoles.Table.Where(e => e.Key.Split('/')[2] is var name
            && (name.StartsWith("Get", StringComparison.Ordinal) || name.StartsWith("List", StringComparison.Ordinal) || name.StartsWith("Watch", StringComparison.Ordinal)));

        Assert.All(reads, e => Assert.Equal(Role.Viewer, e.Value));
    }

    [Theory]
    [InlineData("/orchestrator.v1.BackupService/StartBackup", Role.Operator)]
    [InlineData("/orchestrator.v1.CheckpointService/CreateCheckpoint", Role.Operator)]
    [InlineData("/orchestrator.v1.PolicyService/RunPolicy", Role.Operator)]
    [InlineData("/orchestrator.v1.BackupService/Restore", Role.Admin)]
    [InlineData("/orchestrator.v1.PolicyService/ApplyPolicy", Role.Admin)]
    [InlineData("/orchestrator.v1.PolicyService/DeletePolicy", Role.Admin)]
    [InlineData("/orchestrator.v1.CheckpointService/RevertCheckpoint", Role.Admin)]
    [InlineData("/orchestrator.v1.CheckpointService/DeleteCheckpoint", Role.Admin)]
    [InlineData("/orchestrator.v1.CheckpointService/SetCheckpointSchedule", Role.Admin)]
    [InlineData("/orchestrator.v1.CheckpointService/DeleteCheckpointSchedule", Role.Admin)]
    [InlineData("/orchestrator.v1.FleetService/GetCompliance", Role.Viewer)]
    [InlineData("/orchestrator.v1.FleetService/ListOverlays", Role.Viewer)]
    public void Table_ChangesNeedOperatorOrAdmin(string method, Role expected) => Assert.Equal(expected, RpcRoles.Required(method));
}
