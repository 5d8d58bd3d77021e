namespace Orchestrator.Hypervisor.Libvirt.Native;

/// <summary>Flag and id values from the libvirt 9.0 headers.</summary>
internal static class LibvirtConstants
{
    // libvirt-domain.h
    internal const uint DomainXmlSecure = 1 << 0;
    internal const uint DomainXmlInactive = 1 << 1;
    internal const uint DomainStartPaused = 1 << 0;
    internal const uint DomainUndefineSnapshotsMetadata = 1 << 1;
    internal const uint DomainUndefineCheckpointsMetadata = 1 << 4;

    internal const uint BlockCommitShallow = 1 << 0;
    internal const uint BlockCommitActive = 1 << 2;
    internal const uint BlockCommitBandwidthBytes = 1 << 4;
    internal const uint BlockJobAbortAsync = 1 << 0;
    internal const uint BlockJobAbortPivot = 1 << 1;

    internal const int EventIdLifecycle = 0;
    internal const int EventIdBlockJob2 = 16;

    internal const int UuidStringBufLen = 37;

    internal const int JobNone = 0;
    internal const int JobBounded = 1;
    internal const int JobUnbounded = 2;
    internal const int JobCompleted = 3;
    internal const int JobFailed = 4;
    internal const int JobCancelled = 5;
    internal const uint JobStatsCompleted = 1 << 0;
    internal const uint JobStatsKeepCompleted = 1 << 1;
    internal const long JobOperationBackup = 9;

    // libvirt-domain-checkpoint.h
    internal const uint CheckpointCreateRedefine = 1 << 0;
    internal const uint CheckpointListTopological = 1 << 1;
    internal const uint CheckpointDeleteMetadataOnly = 1 << 1;

    // libvirt-domain-snapshot.h
    internal const uint SnapshotCreateNoMetadata = 1 << 2;
    internal const uint SnapshotCreateDiskOnly = 1 << 4;
    internal const uint SnapshotCreateAtomic = 1 << 7;
    internal const uint SnapshotListInternal = 1 << 8;
    internal const uint SnapshotRevertRunning = 1 << 0;
    internal const uint SnapshotRevertPaused = 1 << 1;
}

/// <summary>virErrorNumber values the driver maps (virterror.h).</summary>
internal static class VirErrorCode
{
    internal const int InternalError = 1;
    internal const int NoSupport = 3;
    internal const int NoConnect = 5;
    internal const int InvalidConn = 6;
    internal const int InvalidArg = 8;
    internal const int OperationFailed = 9;
    internal const int XmlError = 27;
    internal const int DomExist = 28;
    internal const int OperationDenied = 29;
    internal const int XmlDetail = 35;
    internal const int SystemError = 38;
    internal const int Rpc = 39;
    internal const int NoDomain = 42;
    internal const int AuthFailed = 45;
    internal const int OperationInvalid = 55;
    internal const int ConfigUnsupported = 67;
    internal const int OperationTimeout = 68;
    internal const int NoDomainSnapshot = 72;
    internal const int ArgumentUnsupported = 74;
    internal const int SnapshotRevertRisky = 77;
    internal const int OperationAborted = 78;
    internal const int BlockCopyActive = 83;
    internal const int OperationUnsupported = 84;
    internal const int AgentUnresponsive = 86;
    internal const int ResourceBusy = 87;
    internal const int AccessDenied = 88;
    internal const int XmlInvalidSchema = 92;
    internal const int AgentUnsynced = 97;
    internal const int DeviceMissing = 99;
    internal const int InvalidDomainCheckpoint = 102;
    internal const int NoDomainCheckpoint = 103;
    internal const int CheckpointInconsistent = 109;

    /// <summary>errno ENOSPC, carried in virError.int1 for VIR_ERR_SYSTEM_ERROR.</summary>
    internal const int Enospc = 28;
}
