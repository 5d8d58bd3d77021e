namespace Orchestrator.Hypervisor.Simulated;

/// <summary>
/// Backup jobs and checkpoints as libvirt has them: the same checks (BackupJobXml), a job that runs in the background
/// at the host's copy speed and whose end is read once, an incremental target that names the live disk as its backing
/// file, checkpoint metadata apart from the bitmaps (which live in the qcow2 images and survive an undefine).
/// </summary>
public sealed partial class SimulatedHypervisor
{
    private const long Qcow2HeaderBytes = 196_616;

    public async Task StartBackupJobAsync(string domain, BackupJobSpec spec, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        SimBackupJob job;
        lock (_lock)
        {
            ThrowIfFaulted(SimulatedOperation.BackupJob);
            var d = Find(domain);
            BackupJobXml.Validate(Snapshot(d), spec, d.Checkpoints.Select(c => c.Name).ToHashSet(StringComparer.Ordinal), _files.ContainsKey);
            if (d.BackupJob is { State: BackupJobState.Running })
            {
                throw new HypervisorException(HypervisorErrorKind.JobActive, $"domain {domain} runs another job (operation 9)");
            }

            // The frozen point: what each target will hold, fixed at the instant the job starts.
            var targets = new List<(SimImage Target, long Bytes)>();
            foreach (var disk in spec.Disks)
            {
                var source = FindDisk(d, disk.Target);
                var active = _files[source.Chain[0]];
                var chain = source.Chain.Select(p => _files[p]).ToList();
                SimImage target;
                long bytes;
                if (spec.Incremental is { } since && !disk.Full)
                {
                    // Only what the bitmap saw; libvirt names the live disk as the target's backing file.
                    if (!active.Bitmaps.TryGetValue(since, out var dirty))
                    {
                        throw new HypervisorException(HypervisorErrorKind.CheckpointNotFound, $"disk {disk.Target} of {domain} has no bitmap {since} (checkpoint {since} is inconsistent)");
                    }

                    bytes = dirty;
                    target = new SimImage(disk.TargetPath, "qcow2", active.VirtualSize) { Backing = active.Path, Allocated = Qcow2HeaderBytes + dirty };
                }
                else
                {
                    bytes = chain.Sum(i => i.Allocated);
                    target = new SimImage(disk.TargetPath, disk.TargetFormat, active.VirtualSize)
                    {
                        Allocated = disk.TargetFormat == "raw" ? active.VirtualSize : Qcow2HeaderBytes + bytes,
                    };
                }

                targets.Add((target, bytes));
            }

            if (spec.NewCheckpoint is { } name)
            {
                var parent = d.Checkpoints.Count == 0 ? null : d.Checkpoints[^1].Name;
                var bitmapDisks = spec.CheckpointDisks ?? [];
                foreach (var target in bitmapDisks)
                {
                    _files[FindDisk(d, target).Chain[0]].Bitmaps[name] = 0;
                }

                var xml = BackupJobXml.CheckpointRequest(name, bitmapDisks, d.Disks.Select(x => x.Target));
                var created = _time.GetUtcNow();
                var checkpoint = BackupJobXml.ParseCheckpoint(xml) with { Parent = parent, CreatedAt = DateTimeOffset.FromUnixTimeSeconds(created.ToUnixTimeSeconds()) };
                d.Checkpoints.Add(checkpoint with { Xml = CheckpointXml(checkpoint) });
            }

            job = new SimBackupJob(targets.Sum(t => t.Bytes));
            d.BackupJob = job;
            foreach (var (target, _) in targets)
            {
                _files[target.Path] = target;
                WriteFile(target);
            }

            job.Run = RunBackupJobAsync(d, job, targets.Select(t => t.Target).ToList());
        }
    }

    public async Task<BackupJobStatus> GetBackupJobAsync(string domain, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        lock (_lock)
        {
            var d = Find(domain);
            if (d.BackupJob is not { } job)
            {
                return BackupJobStatus.None;
            }

            if (job.State != BackupJobState.Running)
            {
                d.BackupJob = null; // read once, as libvirt's completed-job statistics
            }

            return new BackupJobStatus(job.State, job.Processed, job.Total, job.Error);
        }
    }

    public async Task AbortBackupJobAsync(string domain, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        lock (_lock)
        {
            var d = Find(domain);
            if (d.BackupJob is not { State: BackupJobState.Running } job)
            {
                throw new HypervisorException(HypervisorErrorKind.NoBlockJob, $"domain {domain} runs no backup job");
            }

            job.End(BackupJobState.Cancelled, "operation aborted: job 'backup' canceled by client");
        }
    }

    public async Task<IReadOnlyList<CheckpointInfo>> ListCheckpointsAsync(string domain, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        lock (_lock)
        {
            return [.. Find(domain).Checkpoints];
        }
    }

    public async Task RedefineCheckpointAsync(string domain, string checkpointXml, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        var checkpoint = BackupJobXml.ParseCheckpoint(checkpointXml);
        BackupJobXml.RequireName(checkpoint.Name, "checkpoint");
        lock (_lock)
        {
            var d = Find(domain);
            if (d.Checkpoints.Any(c => c.Name == checkpoint.Name))
            {
                throw new HypervisorException(HypervisorErrorKind.CheckpointExists, $"domain {domain} already has a checkpoint {checkpoint.Name}");
            }

            // As libvirt (measured, 9.0): a parent it does not know is refused.
            if (checkpoint.Parent is { } parent && d.Checkpoints.All(c => c.Name != parent))
            {
                throw new HypervisorException(HypervisorErrorKind.InvalidArgument, $"invalid argument: parent {parent} for moment {checkpoint.Name} not found");
            }

            // Metadata only, as libvirt's redefinition without validation: the bitmaps must still be in the images.
            d.Checkpoints.Add(checkpoint);
        }
    }

    public async Task DeleteCheckpointAsync(string domain, string name, bool metadataOnly = false, CancellationToken cancellationToken = default)
    {
        await DelayAsync(Options.CallLatency, cancellationToken);
        BackupJobXml.RequireName(name, "checkpoint");
        lock (_lock)
        {
            var d = Find(domain);
            var index = d.Checkpoints.FindIndex(c => c.Name == name);
            if (index < 0)
            {
                throw new HypervisorException(HypervisorErrorKind.CheckpointNotFound, $"domain {domain} has no checkpoint {name}");
            }

            var removed = d.Checkpoints[index];
            d.Checkpoints.RemoveAt(index);
            for (var i = 0; i < d.Checkpoints.Count; i++)
            {
                if (d.Checkpoints[i].Parent == name)
                {
                    d.Checkpoints[i] = d.Checkpoints[i] with { Parent = removed.Parent };
                }
            }

            if (!metadataOnly)
            {
                // A bitmap counts every write since its creation, so the parent's already holds the deleted one's.
                foreach (var disk in removed.Disks.Where(x => x.Bitmap is not null))
                {
                    if (d.Disks.FirstOrDefault(x => x.Target == disk.Target) is { } live)
                    {
                        _files[live.Chain[0]].Bitmaps.Remove(disk.Bitmap!);
                    }
                }
            }
        }
    }

    /// <summary>The job copies at the host's copy speed (instantly at 0) and fails if the domain stops meanwhile.</summary>
    private async Task RunBackupJobAsync(SimDomain d, SimBackupJob job, List<SimImage> targets)
    {
        await Task.Yield();
        const int Steps = 10;
        for (var step = 1; step <= Steps; step++)
        {
            if (Options.CopyBytesPerSecond > 0 && job.Total > 0)
            {
                await Task.Delay(TimeSpan.FromSeconds((double)job.Total / Options.CopyBytesPerSecond / Steps), _time);
            }

            lock (_lock)
            {
                if (job.State != BackupJobState.Running)
                {
                    break;
                }

                if (!d.IsActive)
                {
                    job.End(BackupJobState.Failed, "domain is not running");
                    break;
                }

                job.Processed = job.Total * step / Steps;
                if (step == Steps)
                {
                    job.End(BackupJobState.Completed, null);
                }
            }
        }

        lock (_lock)
        {
            if (job.State != BackupJobState.Completed)
            {
                // QEMU leaves the partial targets behind; libvirt does not delete them either.
                foreach (var target in targets)
                {
                    target.Allocated = Math.Min(target.Allocated, Qcow2HeaderBytes);
                }
            }
        }
    }

    private static string CheckpointXml(CheckpointInfo checkpoint) =>
        new System.Xml.Linq.XElement(
            "domaincheckpoint",
            new System.Xml.Linq.XElement("name", checkpoint.Name),
            checkpoint.Parent is null ? null : new System.Xml.Linq.XElement("parent", new System.Xml.Linq.XElement("name", checkpoint.Parent)),
            new System.Xml.Linq.XElement("creationTime", checkpoint.CreatedAt.ToUnixTimeSeconds()),
            new System.Xml.Linq.XElement(
                "disks",
                checkpoint.Disks.Select(x => x.Bitmap is null
                    ? new System.Xml.Linq.XElement("disk", new System.Xml.Linq.XAttribute("name", x.Target), new System.Xml.Linq.XAttribute("checkpoint", "no"))
                    : new System.Xml.Linq.XElement("disk", new System.Xml.Linq.XAttribute("name", x.Target), new System.Xml.Linq.XAttribute("checkpoint", "bitmap"), new System.Xml.Linq.XAttribute("bitmap", x.Bitmap)))))
            .ToString();

    private sealed class SimBackupJob(long total)
    {
        public long Total { get; } = total;

        public long Processed { get; set; }

        public BackupJobState State { get; private set; } = BackupJobState.Running;

        public string? Error { get; private set; }

        public Task? Run { get; set; }

        public void End(BackupJobState state, string? error)
        {
            State = state;
            Error = error;
        }
    }
}
