using System.Diagnostics;
using Orchestrator.Grains.Workflows;

namespace Orchestrator.UnitTests.Workflows;

/// <summary>The step runner under every workflow: bounded retries, timeouts, compensation order, observers, spans, records.</summary>
public sealed class StepRunnerTests
{
    private static readonly ActivitySource Source = new($"step-runner-tests-{Guid.NewGuid():N}");

    private static StepRunner Runner(params IStepObserver[] observers) => new("test", Source, TimeProvider.System, observers);

    private static Retry Fast(int attempts, TimeSpan? budget = null) =>
        Retry.Bounded(attempts, TimeSpan.FromMilliseconds(1), TimeSpan.FromMilliseconds(5), budget);

    [Fact]
    public async Task RunAsync_FailsTwiceThenSucceeds_RetriesAndRecordsThreeAttempts()
    {
        var runner = Runner();
        var calls = 0;

        await runner.RunAsync("flaky", Fast(5), timeout: null, _ => ++calls < 3 ? throw new IOException("not yet") : Task.CompletedTask, CancellationToken.None);

        Assert.Equal(3, calls);
        var record = Assert.Single(runner.Records);
        Assert.Equal(new StepRecord("flaky", StepOutcome.Succeeded, 3, record.Duration, null), record);
    }

    [Fact]
    public async Task RunAsync_AlwaysFails_StopsAtMaxAttemptsAndThrowsStepFailedWithTheCause()
    {
        var runner = Runner();
        var calls = 0;

        var failure = await Assert.ThrowsAsync<StepFailedException>(() =>
            runner.RunAsync("broken", Fast(4), timeout: null, _ => { calls++; throw new IOException("disk gone"); }, CancellationToken.None));

        Assert.Equal(4, calls);
        Assert.Equal("broken", failure.Step);
        Assert.Equal(4, failure.Attempts);
        Assert.IsType<IOException>(failure.InnerException);
        Assert.Equal(StepOutcome.Failed, Assert.Single(runner.Records).Outcome);
    }

    [Fact]
    public async Task RunAsync_RetryNone_FailsAfterOneAttempt()
    {
        var calls = 0;
        await Assert.ThrowsAsync<StepFailedException>(() =>
            Runner().RunAsync("once", Retry.None, timeout: null, _ => { calls++; throw new IOException("no"); }, CancellationToken.None));
        Assert.Equal(1, calls);
    }

    [Fact]
    public async Task RunAsync_BudgetSpentBeforeMaxAttempts_StopsAtTheBudget()
    {
        var calls = 0;
        var clock = Stopwatch.StartNew();
        var retry = Retry.Bounded(1000, TimeSpan.FromMilliseconds(20), TimeSpan.FromMilliseconds(20), budget: TimeSpan.FromMilliseconds(300));

        await Assert.ThrowsAsync<StepFailedException>(() =>
            Runner().RunAsync("slow-fail", retry, timeout: null, _ => { calls++; throw new IOException("no"); }, CancellationToken.None));

        // 300 ms of 20 ms waits: about 15 attempts, never the 1000 allowed, and not before the budget was spent.
        Assert.InRange(calls, 2, 100);
        Assert.True(clock.Elapsed >= TimeSpan.FromMilliseconds(280), $"gave up after {clock.Elapsed}");
    }

    [Fact]
    public async Task RunAsync_NonRetryableError_FailsAtOnce()
    {
        var calls = 0;
        var retry = Fast(10) with { NonRetryable = e => e is UnauthorizedAccessException };

        await Assert.ThrowsAsync<StepFailedException>(() =>
            Runner().RunAsync("denied", retry, timeout: null, _ => { calls++; throw new UnauthorizedAccessException("no"); }, CancellationToken.None));

        Assert.Equal(1, calls);
    }

    [Fact]
    public async Task RunAsync_StepOverrunsItsTimeout_ItsTokenIsCancelledAndItFailsWithTimeout()
    {
        var stepToken = CancellationToken.None;
        var clock = Stopwatch.StartNew();

        var failure = await Assert.ThrowsAsync<StepFailedException>(() =>
            Runner().RunAsync(
                "hangs",
                Retry.None,
                timeout: TimeSpan.FromMilliseconds(100),
                async ct =>
                {
                    stepToken = ct;
                    await Task.Delay(Timeout.Infinite, ct);
                },
                CancellationToken.None));

        Assert.IsType<TimeoutException>(failure.InnerException);
        Assert.True(stepToken.IsCancellationRequested);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"took {clock.Elapsed}");
    }

    [Fact]
    public async Task RunAsync_TimeoutOnEachAttempt_RetriedWithAFreshTimeout()
    {
        var calls = 0;
        await Runner().RunAsync(
            "slow-then-fast",
            Fast(3),
            timeout: TimeSpan.FromMilliseconds(100),
            async ct =>
            {
                if (++calls == 1)
                {
                    await Task.Delay(Timeout.Infinite, ct);
                }
            },
            CancellationToken.None);

        Assert.Equal(2, calls);
    }

    [Fact]
    public async Task RunAsync_WorkflowCancelled_CancellationPassesThroughWithoutRetry()
    {
        using var cancel = new CancellationTokenSource();
        var calls = 0;

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() =>
            Runner().RunAsync(
                "cancelled",
                Fast(5),
                timeout: null,
                async ct =>
                {
                    calls++;
                    await cancel.CancelAsync();
                    ct.ThrowIfCancellationRequested();
                },
                cancel.Token));

        Assert.Equal(1, calls);
    }

    [Fact]
    public async Task CompensateAsync_ThirdStepFails_UndoesTheFirstTwoNewestFirst()
    {
        var runner = Runner();
        var undone = new List<string>();
        Compensation Undo(string name) => new(name, (_, _) => { undone.Add(name); return Task.CompletedTask; });

        runner.Compensate(Undo("admission"));
        await runner.RunAsync("a", Retry.None, null, _ => Task.CompletedTask, CancellationToken.None, compensate: Undo("undo a"));
        await runner.RunAsync("b", Retry.None, null, _ => Task.CompletedTask, CancellationToken.None, compensate: Undo("undo b"));
        var failure = await Assert.ThrowsAsync<StepFailedException>(() =>
            runner.RunAsync("c", Retry.None, null, _ => throw new IOException("c broke"), CancellationToken.None));

        await runner.CompensateAsync(failure, () => false, CancellationToken.None);

        Assert.Equal(["undo b", "undo a", "admission"], undone);
        Assert.Empty(runner.Registered);
    }

    [Fact]
    public async Task CompensateAsync_CompensationRegisteredBeforeItsStep_RunsWhenThatStepFails()
    {
        var runner = Runner();
        StepFailedException? seen = null;
        var failure = await Assert.ThrowsAsync<StepFailedException>(() =>
            runner.RunAsync("half-done", Retry.None, null, _ => throw new IOException("half"), CancellationToken.None, compensate: new("undo half", (f, _) => { seen = f; return Task.CompletedTask; })));

        await runner.CompensateAsync(failure, () => false, CancellationToken.None);

        Assert.Same(failure, seen);
    }

    [Fact]
    public async Task CompensateAsync_DischargedCompensation_DoesNotRun()
    {
        var runner = Runner();
        var undone = new List<string>();
        await runner.RunAsync("a", Retry.None, null, _ => Task.CompletedTask, CancellationToken.None, compensate: new("undo a", (_, _) => { undone.Add("a"); return Task.CompletedTask; }));
        await runner.RunAsync("b", Retry.None, null, _ => Task.CompletedTask, CancellationToken.None, compensate: new("undo b", (_, _) => { undone.Add("b"); return Task.CompletedTask; }));
        runner.Discharge("undo b");
        var failure = await Assert.ThrowsAsync<StepFailedException>(() => runner.RunAsync("c", Retry.None, null, _ => throw new IOException("no"), CancellationToken.None));

        await runner.CompensateAsync(failure, () => false, CancellationToken.None);

        Assert.Equal(["a"], undone);
    }

    [Fact]
    public async Task CompensateAsync_CompensationEndsTheWorkflow_OlderOnesDoNotRun()
    {
        var runner = Runner();
        var ended = false;
        var undone = new List<string>();
        runner.Compensate(new("older", (_, _) => { undone.Add("older"); return Task.CompletedTask; }));
        runner.Compensate(new("give up", (_, _) => { undone.Add("give up"); ended = true; return Task.CompletedTask; }));
        var failure = await Assert.ThrowsAsync<StepFailedException>(() => runner.RunAsync("x", Retry.None, null, _ => throw new IOException("no"), CancellationToken.None));

        await runner.CompensateAsync(failure, () => ended, CancellationToken.None);

        Assert.Equal(["give up"], undone);
    }

    [Fact]
    public async Task RunAsync_StepPassedBeforeARestart_NotRunButItsCompensationIsRegistered()
    {
        var runner = Runner();
        var ran = false;

        await runner.RunAsync("done-before", Retry.None, null, _ => { ran = true; return Task.CompletedTask; }, CancellationToken.None, compensate: new("undo it", (_, _) => Task.CompletedTask), passed: true);

        Assert.False(ran);
        Assert.Equal(["undo it"], runner.Registered);
        Assert.Equal(StepOutcome.Passed, Assert.Single(runner.Records).Outcome);
    }

    [Fact]
    public async Task Observers_CalledBeforeAndAfterEachStep_OnEachFailedAttempt_AndOnHeartbeats()
    {
        var observer = new RecordingObserver();
        var runner = Runner(observer);
        var calls = 0;

        await runner.RunAsync("one", Retry.None, null, _ => Task.CompletedTask, CancellationToken.None);
        await runner.RunAsync(
            "two",
            Fast(3),
            null,
            _ =>
            {
                if (++calls < 2)
                {
                    throw new IOException("first try");
                }

                runner.Reached("two", "half way", 1, 2);
                return Task.CompletedTask;
            },
            CancellationToken.None);
        await runner.RunAsync("skipped", Retry.None, null, _ => Task.CompletedTask, CancellationToken.None, passed: true);

        Assert.Equal(["before one", "after one", "before two", "failed two #1: first try", "reached two/half way 1/2", "after two"], observer.Events);
    }

    [Fact]
    public async Task Observers_StepFailsForGood_NoAfterCall()
    {
        var observer = new RecordingObserver();
        await Assert.ThrowsAsync<StepFailedException>(() => Runner(observer).RunAsync("bad", Fast(2), null, _ => throw new IOException("x"), CancellationToken.None));
        Assert.Equal(["before bad", "failed bad #1: x", "failed bad #2: x"], observer.Events);
    }

    [Fact]
    public async Task RunAsync_PersistedLedger_KeepsCountingAcrossRunsAndSavesBeforeEachWait()
    {
        // A step resumed after a restart: two attempts were already spent (and saved) by the process before.
        var ledger = new CountingLedger { Attempts = 2, FailingSince = DateTimeOffset.UtcNow };
        var calls = 0;

        await Assert.ThrowsAsync<StepFailedException>(() =>
            Runner().RunAsync("resumed", Fast(4) with { Ledger = ledger }, null, _ => { calls++; throw new IOException("still"); }, CancellationToken.None));

        Assert.Equal(2, calls); // attempts 3 and 4 of 4
        Assert.Equal(4, ledger.Attempts);
        Assert.Equal(1, ledger.Saves); // before the one wait between them; not after the last
    }

    [Fact]
    public async Task RunAsync_EachStep_HasItsOwnSpanNamedAfterIt()
    {
        var spans = new List<string>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s == Source,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllData,
            ActivityStopped = a => spans.Add($"{a.OperationName}:{a.Status}"),
        };
        ActivitySource.AddActivityListener(listener);
        var runner = Runner();

        await runner.RunAsync("ok", Retry.None, null, _ => Task.CompletedTask, CancellationToken.None);
        await Assert.ThrowsAsync<StepFailedException>(() => runner.RunAsync("bad", Retry.None, null, _ => throw new IOException("x"), CancellationToken.None));

        Assert.Equal(["test.ok:Unset", "test.bad:Error"], spans);
    }

    [Theory]
    [InlineData(1, 100)]
    [InlineData(2, 200)]
    [InlineData(3, 400)]
    [InlineData(5, 1000)]
    [InlineData(40, 1000)]
    public void DelayAfter_DoublesFromTheInitialIntervalUpToTheMaximum(int failures, int expectedMs)
    {
        var retry = Retry.Bounded(50, TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(1));
        Assert.Equal(TimeSpan.FromMilliseconds(expectedMs), retry.DelayAfter(failures));
    }

    private sealed class RecordingObserver : IStepObserver
    {
        public List<string> Events { get; } = [];

        public void BeforeStep(string step) => Events.Add($"before {step}");

        public void AfterStep(string step) => Events.Add($"after {step}");

        public void Reached(string step, string point, int done, int total) => Events.Add($"reached {step}/{point} {done}/{total}");

        public void AttemptFailed(string step, int attempt, Exception error) => Events.Add($"failed {step} #{attempt}: {error.Message}");
    }

    private sealed class CountingLedger : IRetryLedger
    {
        public int Attempts { get; set; }

        public DateTimeOffset? FailingSince { get; set; }

        public int Saves { get; private set; }

        public Task SaveAsync(CancellationToken cancellationToken)
        {
            Saves++;
            return Task.CompletedTask;
        }
    }
}
