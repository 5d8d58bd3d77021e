using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Orchestrator.Hypervisor.Libvirt.Native;
using static Orchestrator.Hypervisor.Libvirt.Native.LibvirtConstants;

namespace Orchestrator.Hypervisor.Libvirt;

/// <summary>Push-mode backup jobs (virDomainBackupBegin) and checkpoints (dirty bitmaps) of running domains.</summary>
public sealed partial class LibvirtHypervisor
{
    public Task StartBackupJobAsync(string domain, BackupJobSpec spec, CancellationToken cancellationToken = default) =>
        RunAsync(
            () =>
            {
                var sw = Stopwatch.StartNew();
                using var dom = Lookup(domain);
                var info = ReadDomain(dom);
                BackupJobXml.Validate(info, spec, CheckpointNames(dom, domain), SafeFiles.Occupied);
                var (current, currentValues) = JobStats(dom, domain, 0);
                if (current is JobBounded or JobUnbounded)
                {
                    throw new HypervisorException(HypervisorErrorKind.JobActive, $"domain {domain} runs another job ({Operation(currentValues)})");
                }

                // The statistics of an earlier job that nobody read would otherwise be taken for this job's end.
                _ = JobStats(dom, domain, JobStatsCompleted);
                var targets = DomainXml.AllDiskTargets(GetXml(dom, domain, 0));
                var backup = BackupJobXml.BackupRequest(spec, targets);
                var checkpoint = spec.NewCheckpoint is null ? null : BackupJobXml.CheckpointRequest(spec.NewCheckpoint, spec.CheckpointDisks ?? [], targets);
                if (LibvirtNative.virDomainBackupBegin(dom, backup, checkpoint, 0) < 0)
                {
                    throw LibvirtErrors.Last($"virDomainBackupBegin({domain})", static code => code switch
                    {
                        VirErrorCode.NoDomainCheckpoint => HypervisorErrorKind.CheckpointNotFound,
                        VirErrorCode.CheckpointInconsistent => HypervisorErrorKind.CheckpointNotFound,
                        _ => null,
                    });
                }

                Log.BackupJobStarted(_logger, domain, spec.Disks.Count, spec.Incremental ?? "(full)", spec.NewCheckpoint ?? "(none)", sw.Elapsed.TotalMilliseconds);
            },
            cancellationToken);

    public Task<BackupJobStatus> GetBackupJobAsync(string domain, CancellationToken cancellationToken = default) =>
        RunAsync(
            () =>
            {
                using var dom = Lookup(domain);
                var (type, values) = JobStats(dom, domain, 0);
                if (type is JobBounded or JobUnbounded)
                {
                    return IsBackup(values) ? new BackupJobStatus(BackupJobState.Running, Long(values, "disk_processed"), Long(values, "disk_total")) : BackupJobStatus.None;
                }

                var (ended, endValues) = JobStats(dom, domain, JobStatsCompleted);
                if (!IsBackup(endValues))
                {
                    return BackupJobStatus.None;
                }

                var state = ended switch
                {
                    JobCompleted => BackupJobState.Completed,
                    JobFailed => BackupJobState.Failed,
                    JobCancelled => BackupJobState.Cancelled,
                    _ => BackupJobState.None,
                };
                var error = endValues.TryGetValue("errmsg", out var message) ? message as string : null;
                return new BackupJobStatus(state, Long(endValues, "disk_processed"), Long(endValues, "disk_total"), error);
            },
            cancellationToken);

    public Task AbortBackupJobAsync(string domain, CancellationToken cancellationToken = default) =>
        RunAsync(
            () =>
            {
                using var dom = Lookup(domain);
                var (type, values) = JobStats(dom, domain, 0);
                if (type is not (JobBounded or JobUnbounded) || !IsBackup(values))
                {
                    throw new HypervisorException(HypervisorErrorKind.NoBlockJob, $"domain {domain} runs no backup job");
                }

                if (LibvirtNative.virDomainAbortJob(dom) < 0)
                {
                    throw LibvirtErrors.Last($"virDomainAbortJob({domain})");
                }
            },
            cancellationToken);

    public Task<IReadOnlyList<CheckpointInfo>> ListCheckpointsAsync(string domain, CancellationToken cancellationToken = default) =>
        RunAsync<IReadOnlyList<CheckpointInfo>>(
            () =>
            {
                using var dom = Lookup(domain);
                return ReadCheckpoints(dom, domain);
            },
            cancellationToken);

    public Task RedefineCheckpointAsync(string domain, string checkpointXml, CancellationToken cancellationToken = default) =>
        RunAsync(
            () =>
            {
                var checkpoint = BackupJobXml.ParseCheckpoint(checkpointXml);
                BackupJobXml.RequireName(checkpoint.Name, "checkpoint");
                using var dom = Lookup(domain);
                if (CheckpointNames(dom, domain).Contains(checkpoint.Name))
                {
                    throw new HypervisorException(HypervisorErrorKind.CheckpointExists, $"domain {domain} already has a checkpoint {checkpoint.Name}");
                }

                using var created = LibvirtNative.virDomainCheckpointCreateXML(dom, checkpointXml, CheckpointCreateRedefine);
                if (created.IsInvalid)
                {
                    throw LibvirtErrors.Last($"virDomainCheckpointCreateXML({domain}, {checkpoint.Name}, redefine)");
                }
            },
            cancellationToken);

    public Task DeleteCheckpointAsync(string domain, string name, bool metadataOnly = false, CancellationToken cancellationToken = default) =>
        RunAsync(
            () =>
            {
                BackupJobXml.RequireName(name, "checkpoint");
                using var dom = Lookup(domain);
                using var checkpoint = LibvirtNative.virDomainCheckpointLookupByName(dom, name, 0);
                if (checkpoint.IsInvalid)
                {
                    throw LibvirtErrors.Last($"virDomainCheckpointLookupByName({domain}, {name})");
                }

                if (LibvirtNative.virDomainCheckpointDelete(checkpoint, metadataOnly ? CheckpointDeleteMetadataOnly : 0) < 0)
                {
                    throw LibvirtErrors.Last($"virDomainCheckpointDelete({domain}, {name})");
                }
            },
            cancellationToken);

    private static List<CheckpointInfo> ReadCheckpoints(DomainHandle dom, string domain)
    {
        var count = LibvirtNative.virDomainListAllCheckpoints(dom, out var array, CheckpointListTopological);
        if (count < 0)
        {
            throw LibvirtErrors.Last($"virDomainListAllCheckpoints({domain})");
        }

        var handles = new CheckpointHandle[count];
        try
        {
            for (var i = 0; i < count; i++)
            {
                handles[i] = new CheckpointHandle(LibvirtNative.ElementAt(array, i));
            }

            return handles.Select(h => BackupJobXml.ParseCheckpoint(
                    LibvirtNative.TakeString(LibvirtNative.virDomainCheckpointGetXMLDesc(h, 0)) ?? throw LibvirtErrors.Last($"virDomainCheckpointGetXMLDesc({domain})")))
                .ToList();
        }
        finally
        {
            foreach (var handle in handles)
            {
                handle?.Dispose();
            }

            LibvirtNative.FreeArray(array);
        }
    }

    private static HashSet<string> CheckpointNames(DomainHandle dom, string domain) =>
        ReadCheckpoints(dom, domain).Select(c => c.Name).ToHashSet(StringComparer.Ordinal);

    private static (int Type, Dictionary<string, object> Values) JobStats(DomainHandle dom, string domain, uint flags)
    {
        if (LibvirtNative.virDomainGetJobStats(dom, out var type, out var parameters, out var count, flags) < 0)
        {
            throw LibvirtErrors.Last($"virDomainGetJobStats({domain})");
        }

        try
        {
            return (type, LibvirtNative.ReadTypedParameters(parameters, count));
        }
        finally
        {
            if (parameters != IntPtr.Zero)
            {
                LibvirtNative.virTypedParamsFree(parameters, count);
            }
        }
    }

    private static bool IsBackup(Dictionary<string, object> values) =>
        values.TryGetValue("operation", out var operation) && operation is long op && op == JobOperationBackup;

    private static string Operation(Dictionary<string, object> values) =>
        values.TryGetValue("operation", out var operation) ? $"operation {operation}" : "unknown operation";

    private static long Long(Dictionary<string, object> values, string name) =>
        values.TryGetValue(name, out var value) && value is long l ? l : 0;

    private static partial class Log
    {
        [LoggerMessage(EventId = 1050, Level = LogLevel.Information, Message = "Backup job on {Domain} started: {Disks} disk(s), since {Incremental}, new checkpoint {Checkpoint}, in {ElapsedMs:F1} ms")]
        public static partial void BackupJobStarted(ILogger logger, string domain, int disks, string incremental, string checkpoint, double elapsedMs);
    }
}
