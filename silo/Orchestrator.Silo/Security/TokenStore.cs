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
    private DateTimeOffset _nextCheck;

    public TokenStore(string path, TimeProvider time, ILogger<TokenStore> logger)
    {
        _path = path;
        _time = time;
        _logger = logger;
        _stamp = Stamp(path);
        var result = TokenFile.Read(path);
        if (result.Errors.Count > 0)
        {
            throw new Configuration.SettingsException(result.Errors);
        }

        _entries = result.Entries;
        _nextCheck = time.GetUtcNow() + CheckInterval;
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
        var now = _time.GetUtcNow();
        if (now < _nextCheck)
        {
            return;
        }

        lock (_reload)
        {
            if (now < _nextCheck)
            {
                return;
            }

            _nextCheck = now + CheckInterval;
            var stamp = Stamp(_path);
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
            if (result.Errors.Count > 0)
            {
                LogReloadFailed(_logger, _path, string.Join("; ", result.Errors), Count);
                return;
            }

            Volatile.Write(ref _entries, result.Entries);
            LogLoaded(_logger, _path, result.Entries.Count);
        }
    }

    private static (DateTime, long)? Stamp(string path)
    {
        var info = new FileInfo(path);
        return info.Exists ? (info.LastWriteTimeUtc, info.Length) : null;
    }
}
