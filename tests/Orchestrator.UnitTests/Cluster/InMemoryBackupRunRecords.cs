using MessagePack;
using Orchestrator.Grains.Backups;

namespace Orchestrator.UnitTests.Cluster;

/// <summary>The run's records as the grain keeps them: each persisted write a deep copy (what a new activation reads).</summary>
internal sealed class InMemoryBackupRunRecords(BackupRunState run) : IBackupRunRecords
{
    public BackupRunState? Persisted { get; private set; }

    public List<BackupStep> Finished { get; } = [];

    public void Add(BackupStep step, string? note)
    {
        run.Step = step;
        run.Steps.Add(new BackupStepEntry { Step = step, At = DateTimeOffset.UtcNow, Note = note });
    }

    public Task PersistAsync(BackupStep step, string? note, CancellationToken cancellationToken)
    {
        Add(step, note);
        return PersistAsync(cancellationToken);
    }

    public Task PersistAsync(CancellationToken cancellationToken)
    {
        Persisted = MessagePackSerializer.Deserialize<BackupRunState>(MessagePackSerializer.Serialize(run, cancellationToken: cancellationToken), cancellationToken: cancellationToken);
        return Task.CompletedTask;
    }

    public Task NoteLiveChangeAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public void DisksChanged()
    {
    }

    public Task FinishAsync(BackupStep outcome, CancellationToken cancellationToken)
    {
        run.Step = outcome;
        Finished.Add(outcome);
        return PersistAsync(cancellationToken);
    }
}
