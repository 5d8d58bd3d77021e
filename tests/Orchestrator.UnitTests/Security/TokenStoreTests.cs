using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Orchestrator.Silo.Security;

namespace Orchestrator.UnitTests.Security;

public sealed class TokenStoreTests : IDisposable
{
    private readonly SecurityFiles _files = new();
    private readonly FakeTimeProvider _time = new(DateTimeOffset.UtcNow);

    public void Dispose() => _files.Dispose();

    private TokenStore Store() => new(_files.TokensFile, TokenFile.Read(_files.TokensFile), _time, NullLogger<TokenStore>.Instance);

    [Fact]
    public void Find_KnownAndUnknownTokens()
    {
        var store = Store();

        Assert.Equal("alice", store.Find(SecurityFiles.AdminToken)?.Name);
        Assert.Null(store.Find("nope"));
        Assert.Null(store.Find(""));
    }

    [Fact]
    public void Find_FileChanged_ReReadAfterTheCheckInterval()
    {
        var store = Store();
        _files.WriteTokens(TokenFileTests.HashLine("new-token", "operator", "new-bot"));
        File.SetLastWriteTimeUtc(_files.TokensFile, DateTime.UtcNow.AddMinutes(1));

        Assert.Equal("alice", store.Find(SecurityFiles.AdminToken)?.Name); // not looked at yet
        _time.Advance(TokenStore.CheckInterval);

        Assert.Null(store.Find(SecurityFiles.AdminToken)); // revoked
        Assert.Equal("new-bot", store.Find("new-token")?.Name);
    }

    [Fact]
    public void Find_FileBrokenOrGone_KeepsTheLastGoodTokens()
    {
        var store = Store();
        _files.WriteTokens("this line is not a token line");
        File.SetLastWriteTimeUtc(_files.TokensFile, DateTime.UtcNow.AddMinutes(1));
        _time.Advance(TokenStore.CheckInterval);

        Assert.Equal("alice", store.Find(SecurityFiles.AdminToken)?.Name);

        File.Delete(_files.TokensFile);
        _time.Advance(TokenStore.CheckInterval);

        Assert.Equal("alice", store.Find(SecurityFiles.AdminToken)?.Name);

        // Fixed again: read again.
        _files.WriteTokens(TokenFileTests.HashLine("new-token", "viewer", "new-bot"));
        _time.Advance(TokenStore.CheckInterval);

        Assert.Equal("new-bot", store.Find("new-token")?.Name);
    }
}
