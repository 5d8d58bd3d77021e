namespace Orchestrator.Cli.Tests.Fakes;

/// <summary>A clock stopped at one instant, so elapsed times in output are exact. Timers still run in real time.</summary>
internal sealed class FixedClock(DateTime utcNow) : TimeProvider
{
    public override DateTimeOffset GetUtcNow() => new(utcNow, TimeSpan.Zero);
}
