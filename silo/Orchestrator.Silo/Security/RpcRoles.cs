namespace Orchestrator.Silo.Security;

/// <summary>
/// The one table of who may call what: every RPC the silo serves (full gRPC method name) and the lowest role
/// that may call it. A method missing here is refused to everybody (fail closed), and a unit test reads the
/// service descriptors so that a new RPC cannot ship without an entry.
/// </summary>
internal static class RpcRoles
{
    public static IReadOnlyDictionary<string, Role> Table { get; } = new Dictionary<string, Role>(StringComparer.Ordinal)
    {
        // Fleet inventory: reads only. ListOverlays with refresh re-reads the hosts' inventory (no change to any VM).
        ["/orchestrator.v1.FleetService/ListHosts"] = Role.Viewer,
        ["/orchestrator.v1.FleetService/ListVms"] = Role.Viewer,
        ["/orchestrator.v1.FleetService/GetVm"] = Role.Viewer,
        ["/orchestrator.v1.FleetService/GetDiskChain"] = Role.Viewer,
        ["/orchestrator.v1.FleetService/GetCompliance"] = Role.Viewer,
        ["/orchestrator.v1.FleetService/ListOverlays"] = Role.Viewer,

        // Backups: starting one adds a backup set; a restore writes new images and can define a new VM.
        ["/orchestrator.v1.BackupService/StartBackup"] = Role.Operator,
        ["/orchestrator.v1.BackupService/GetBackup"] = Role.Viewer,
        ["/orchestrator.v1.BackupService/ListBackups"] = Role.Viewer,
        ["/orchestrator.v1.BackupService/WatchBackup"] = Role.Viewer,
        ["/orchestrator.v1.BackupService/Restore"] = Role.Admin,
        ["/orchestrator.v1.BackupService/RepairOverlays"] = Role.Admin,
        ["/orchestrator.v1.BackupService/TestBackup"] = Role.Admin,
        ["/orchestrator.v1.BackupService/VerifyBackup"] = Role.Operator, // reads every image of the chain once

        // Checkpoints: creating one adds; reverting throws away the VM's present state; deleting and schedules change.
        ["/orchestrator.v1.CheckpointService/CreateCheckpoint"] = Role.Operator,
        ["/orchestrator.v1.CheckpointService/ListCheckpoints"] = Role.Viewer,
        ["/orchestrator.v1.CheckpointService/RevertCheckpoint"] = Role.Admin,
        ["/orchestrator.v1.CheckpointService/DeleteCheckpoint"] = Role.Admin,
        ["/orchestrator.v1.CheckpointService/SetCheckpointSchedule"] = Role.Admin,
        ["/orchestrator.v1.CheckpointService/GetCheckpointSchedule"] = Role.Viewer,
        ["/orchestrator.v1.CheckpointService/ListCheckpointSchedules"] = Role.Viewer,
        ["/orchestrator.v1.CheckpointService/DeleteCheckpointSchedule"] = Role.Admin,

        // Policies: running one now is an operator's job; changing or deleting the spec is an admin's.
        ["/orchestrator.v1.PolicyService/ApplyPolicy"] = Role.Admin,
        ["/orchestrator.v1.PolicyService/GetPolicy"] = Role.Viewer,
        ["/orchestrator.v1.PolicyService/ListPolicies"] = Role.Viewer,
        ["/orchestrator.v1.PolicyService/DeletePolicy"] = Role.Admin,
        ["/orchestrator.v1.PolicyService/RunPolicy"] = Role.Operator,
        ["/orchestrator.v1.PolicyService/GetPolicyRun"] = Role.Viewer,
        ["/orchestrator.v1.PolicyService/ListPolicyRuns"] = Role.Viewer,
        ["/orchestrator.v1.PolicyService/WatchPolicyRun"] = Role.Viewer,

        // Server reflection (grpcurl list/describe): both protocol versions.
        ["/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"] = Role.Viewer,
        ["/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"] = Role.Viewer,
    };

    /// <summary>The lowest role for <paramref name="method"/>, or null when the table has no entry.</summary>
    public static Role? Required(string method) => Table.TryGetValue(method, out var role) ? role : null;

    /// <summary>Calls that change something (operator or admin): their callers are written to the audit log.</summary>
    public static bool IsMutating(Role required) => required >= Role.Operator;
}
