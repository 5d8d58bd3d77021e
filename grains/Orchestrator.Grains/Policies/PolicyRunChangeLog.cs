namespace Orchestrator.Grains.Policies;

/// <summary>
/// The in-memory change log of the run a part drives, for watchers: every change of a target appends (version,
/// target); a target's newest entry is the one whose version matches its track, older ones are skipped and compacted
/// away once the log holds twice as many entries as targets. Versions only grow within an activation, so the changes
/// since a version are a binary search and a walk over the entries after it: O(changes since), never O(targets).
/// Memory is bounded by 2 entries per target (plus 64). Per-status counts are kept as targets change, so a
/// watcher's header costs O(1) too. Nothing here is persisted: a new activation starts a new log (a new epoch), and
/// a watcher of the previous one gets the part's targets whole once.
/// </summary>
internal sealed class PolicyRunChangeLog
{
    private readonly Dictionary<PolicyTargetRecord, Track> _tracks = new(ReferenceEqualityComparer.Instance);
    private readonly List<(long Version, PolicyTargetRecord Target)> _entries = [];
    private readonly int[] _counts = new int[5];

    public PolicyRunChangeLog(PolicyHostRunRecord run)
    {
        Run = run;
        Floor = run.Version;
        foreach (var target in run.Targets)
        {
            _tracks[target] = new Track { Version = Floor, Counted = target.Status };
            _counts[(int)target.Status]++;
        }
    }

    public PolicyHostRunRecord Run { get; }

    /// <summary>The run's version when the log began: changes before it are not in the log.</summary>
    public long Floor { get; }

    public int Entries => _entries.Count;

    public PolicyRunCounts Counts => new(_counts[0], _counts[1], _counts[2], _counts[3], _counts[4]);

    /// <summary>Records that <paramref name="target"/> changed at <paramref name="version"/> (above every earlier one).</summary>
    public void Record(PolicyTargetRecord target, long version)
    {
        if (!_tracks.TryGetValue(target, out var track))
        {
            return;
        }

        if (track.Counted != target.Status)
        {
            _counts[(int)track.Counted]--;
            _counts[(int)target.Status]++;
            track.Counted = target.Status;
        }

        track.Version = version;
        _entries.Add((version, target));
        if (_entries.Count > (2 * _tracks.Count) + 64)
        {
            _entries.RemoveAll(e => _tracks[e.Target].Version != e.Version);
        }
    }

    /// <summary>The targets whose newest change is above <paramref name="version"/>, oldest change first; null when the log cannot tell (before its floor).</summary>
    public List<PolicyTargetRecord>? Since(long version)
    {
        if (version < Floor)
        {
            return null;
        }

        var lo = 0;
        var hi = _entries.Count;
        while (lo < hi)
        {
            var mid = (lo + hi) >>> 1;
            if (_entries[mid].Version <= version)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }

        var changed = new List<PolicyTargetRecord>(_entries.Count - lo);
        for (var i = lo; i < _entries.Count; i++)
        {
            var (entryVersion, target) = _entries[i];
            if (_tracks[target].Version == entryVersion)
            {
                changed.Add(target);
            }
        }

        return changed;
    }

    private sealed class Track
    {
        public long Version { get; set; }

        public PolicyTargetStatus Counted { get; set; }
    }
}
