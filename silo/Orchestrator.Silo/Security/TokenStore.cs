using System.Security.Cryptography;
using System.Text;

namespace Orchestrator.Silo.Security;

/// <summary>
/// The bearer tokens of the tokens file, looked up by the SHA-256 of a presented token in constant time. The file
/// is looked at again at most every <see cref="CheckInterval"/> and re-read when its time or size changed; a file
/// that became unreadable or malformed keeps the last good set (logged as an error).
/// </summary>
internal sealed partial class TokenStore
{
    public static readonly TimeSpan CheckInterval = TimeSpan.FromSeconds(2);

    private readonly string _path;
    private readonly TimeProvider _time;
    private readonly ILogger<TokenStore> _logger;
    private readonly Lock _reload = new();
    private IReadOnlyList<TokenEntry> _entries;
    private (DateTime Written, long Length)? _stamp;
    private long _nextCheckTicks; // UTC ticks; read without the lock

    /// <param name="path">The tokens file.</param>
    /// <param name="loaded">Its content as read and checked at start (<see cref="ApiSecurity.Tokens"/>).</param>
    public TokenStore(string path, TokenFileResult loaded, TimeProvider time, ILogger<TokenStore> logger)
    {
        _path = path;
        _time = time;
        _logger = logger;
        _entries = loaded.Entries;
        _stamp = loaded.Stamp;
        _nextCheckTicks = (time.GetUtcNow() + CheckInterval).UtcTicks;
        LogLoaded(logger, path, _entries.Count);
    }

    public int Count => Volatile.Read(ref _entries).Count;

    /// <summary>The entry whose hash is the SHA-256 of <paramref name="token"/>, or null. Every entry is compared, in constant time.</summary>
    public TokenEntry? Find(string token)
    {
        ReloadIfChanged();
        Span<byte> hash = stackalloc byte[SHA256.HashSizeInBytes];
        SHA256.HashData(Encoding.UTF8.GetBytes(token), hash);
        TokenEntry? match = null;
        foreach (var entry in Volatile.Read(ref _entries))
        {
            // No early exit: the time taken does not depend on where (or whether) the token is found.
            if (CryptographicOperations.FixedTimeEquals(entry.Hash, hash))
            {
                match = entry;
            }
        }

        return match;
    }

    private void ReloadIfChanged()
    {
        var now = _time.GetUtcNow().UtcTicks;
        if (now < Volatile.Read(ref _nextCheckTicks))
        {
            return;
        }

        lock (_reload)
        {
            if (now < _nextCheckTicks)
            {
                return;
            }

            Volatile.Write(ref _nextCheckTicks, now + CheckInterval.Ticks);
            var stamp = TokenFile.StampOf(_path);
            if (stamp == _stamp)
            {
                return;
            }

            _stamp = stamp;
            if (stamp is null)
            {
                LogReloadFailed(_logger, _path, "the file is gone", Count);
                return;
            }

            var result = TokenFile.Read(_path);
            _stamp = result.Stamp;
            if (result.Errors.Count > 0)
            {
                LogReloadFailed(_logger, _path, string.Join("; ", result.Errors), Count);
                return;
            }

            Volatile.Write(ref _entries, result.Entries);
            LogLoaded(_logger, _path, result.Entries.Count);
        }
    }
}
