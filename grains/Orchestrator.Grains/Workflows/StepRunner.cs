using System.Diagnostics;

namespace Orchestrator.Grains.Workflows;

/// <summary>
/// How a step is retried (Temporal's shape): at most <see cref="MaxAttempts"/> attempts, the first retry after
/// <see cref="InitialInterval"/>, each next one <see cref="BackoffCoefficient"/> times longer up to
/// <see cref="MaximumInterval"/>, and no retry once the step has been failing for <see cref="Budget"/>. Never unbounded.
/// </summary>
public sealed record Retry
{
    private Retry(int maxAttempts, TimeSpan initialInterval, TimeSpan maximumInterval, TimeSpan? budget, double backoffCoefficient)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxAttempts, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(backoffCoefficient, 1.0);
        MaxAttempts = maxAttempts;
        InitialInterval = initialInterval;
        MaximumInterval = maximumInterval;
        Budget = budget;
        BackoffCoefficient = backoffCoefficient;
    }

    /// <summary>One attempt: the step's failure is the workflow's at once (e.g. a snapshot that must not be taken twice).</summary>
    public static Retry None { get; } = new(1, TimeSpan.Zero, TimeSpan.Zero, null, 1.0);

    /// <summary>Up to <paramref name="maxAttempts"/> attempts within <paramref name="budget"/>, with exponential backoff.</summary>
    public static Retry Bounded(int maxAttempts, TimeSpan initialInterval, TimeSpan maximumInterval, TimeSpan? budget = null, double backoffCoefficient = 2.0, IRetryLedger? ledger = null) =>
        new(maxAttempts, initialInterval, maximumInterval, budget, backoffCoefficient) { Ledger = ledger };

    public int MaxAttempts { get; }

    public TimeSpan InitialInterval { get; }

    public TimeSpan MaximumInterval { get; }

    /// <summary>How long a step may keep failing (counted from its first failure, across restarts with a persisted ledger).</summary>
    public TimeSpan? Budget { get; }

    public double BackoffCoefficient { get; }

    /// <summary>Errors that are never retried (the step fails at once).</summary>
    public Func<Exception, bool>? NonRetryable { get; init; }

    /// <summary>
    /// Where attempts are counted. Null: in memory, per run of the step. A persisted ledger keeps counting across
    /// restarts (a step resumed after a crash does not get a fresh budget) and may be shared by several steps.
    /// </summary>
    public IRetryLedger? Ledger { get; init; }

    /// <summary>The wait after the <paramref name="failures"/>-th failure (1-based): exponential, at most <see cref="MaximumInterval"/>.</summary>
    public TimeSpan DelayAfter(int failures)
    {
        var factor = Math.Pow(BackoffCoefficient, Math.Min(Math.Max(failures - 1, 0), 10));
        var ticks = Math.Min(InitialInterval.Ticks * factor, MaximumInterval.Ticks);
        return TimeSpan.FromTicks((long)ticks);
    }
}

/// <summary>Failed attempts of one or more steps, kept where the workflow keeps its state (saved before each retry's wait).</summary>
public interface IRetryLedger
{
    int Attempts { get; set; }

    DateTimeOffset? FailingSince { get; set; }

    Task SaveAsync(CancellationToken cancellationToken);
}

/// <summary>
/// Undoes a step's effect. Registered before the step runs (and by a step passed before a restart), replayed newest
/// first when that step or any later one fails, until it is discharged.
/// </summary>
public sealed record Compensation(string Name, Func<StepFailedException, CancellationToken, Task> Action);

/// <summary>Watches steps: traces, metrics, crash-test hooks. Called on the workflow's own thread, in order.</summary>
public interface IStepObserver
{
    void BeforeStep(string step)
    {
    }

    void AfterStep(string step)
    {
    }

    /// <summary>A long step's heartbeat: it reached <paramref name="point"/> (<paramref name="done"/> of <paramref name="total"/>).</summary>
    void Reached(string step, string point, int done, int total)
    {
    }

    void AttemptFailed(string step, int attempt, Exception error)
    {
    }
}

/// <summary>One step as it ran: attempts made, how it ended, how long it took.</summary>
public sealed record StepRecord(string Step, StepOutcome Outcome, int Attempts, TimeSpan Duration, string? Error);

public enum StepOutcome
{
    Succeeded,
    Failed,

    /// <summary>Passed before a restart: not run again.</summary>
    Passed,
    Compensated,
}

/// <summary>A step failed for good (its retries spent, or a non-retryable error).</summary>
public sealed class StepFailedException(string step, int attempts, TimeSpan failingFor, Exception error)
    : Exception($"step '{step}' failed after {attempts} attempt(s): {error.Message}", error)
{
    public string Step { get; } = step;

    public int Attempts { get; } = attempts;

    public TimeSpan FailingFor { get; } = failingFor;
}

/// <summary>
/// Runs a workflow's steps: each with its retry policy and timeout, in a trace span of its own, with the observers
/// told before and after; keeps the compensations registered by the steps and replays them on failure; records every
/// step. Cancellation of the workflow's token is never a failure: it passes through untouched.
/// </summary>
public sealed class StepRunner(string spanPrefix, ActivitySource source, TimeProvider time, IReadOnlyList<IStepObserver> observers, Action<Activity?>? tag = null)
{
    private readonly List<Compensation> _compensations = [];
    private readonly List<StepRecord> _records = [];

    public IReadOnlyList<StepRecord> Records => _records;

    /// <summary>Names of the compensations registered now, oldest first.</summary>
    public IReadOnlyList<string> Registered => [.. _compensations.Select(c => c.Name)];

    /// <summary>Registers a compensation that belongs to no single step (e.g. for what admission created).</summary>
    public void Compensate(Compensation compensation) => _compensations.Add(compensation);

    /// <summary>The forward path has undone (or made permanent) what <paramref name="name"/> would undo: it no longer runs.</summary>
    public void Discharge(string name) => _compensations.RemoveAll(c => c.Name == name);

    /// <summary>Tells the observers that a long step reached a point (a heartbeat; crash tests stop here).</summary>
    public void Reached(string step, string point, int done = 0, int total = 0)
    {
        foreach (var observer in observers)
        {
            observer.Reached(step, point, done, total);
        }
    }

    /// <summary>
    /// Runs one step. <paramref name="compensate"/> is registered first (a step passed before a restart registers it
    /// too: a later failure still undoes it). <paramref name="passed"/>: the step ended before a restart and is not run again.
    /// Throws <see cref="StepFailedException"/> when the step fails for good.
    /// </summary>
    public async Task RunAsync(
        string name,
        Retry retry,
        TimeSpan? timeout,
        Func<CancellationToken, Task> action,
        CancellationToken cancellationToken,
        Compensation? compensate = null,
        bool passed = false)
    {
        if (compensate is not null)
        {
            _compensations.Add(compensate);
        }

        if (passed)
        {
            _records.Add(new StepRecord(name, StepOutcome.Passed, 0, TimeSpan.Zero, null));
            return;
        }

        foreach (var observer in observers)
        {
            observer.BeforeStep(name);
        }

        using var activity = source.StartActivity($"{spanPrefix}.{name}");
        tag?.Invoke(activity);
        var started = time.GetTimestamp();
        var ledger = retry.Ledger ?? new MemoryLedger();
        var attempts = 0;
        while (true)
        {
            attempts++;
            using var deadline = timeout is { } t ? new CancellationTokenSource(t, time) : null;
            using var linked = deadline is null ? null : CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, deadline.Token);
            try
            {
                await action(linked?.Token ?? cancellationToken);
                break;
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                throw;
            }
            catch (Exception e)
            {
                var error = deadline is { IsCancellationRequested: true }
                    ? new TimeoutException($"step '{name}' did not finish within its timeout of {timeout}", e)
                    : e;
                activity?.SetStatus(ActivityStatusCode.Error, error.Message);
                foreach (var observer in observers)
                {
                    observer.AttemptFailed(name, attempts, error);
                }

                var now = time.GetUtcNow();
                ledger.Attempts++;
                ledger.FailingSince ??= now;
                var failingFor = now - ledger.FailingSince.Value;
                if (retry.NonRetryable?.Invoke(error) == true || ledger.Attempts >= retry.MaxAttempts || failingFor >= retry.Budget)
                {
                    activity?.SetTag("attempts", attempts);
                    _records.Add(new StepRecord(name, StepOutcome.Failed, attempts, time.GetElapsedTime(started), error.Message));
                    throw new StepFailedException(name, ledger.Attempts, failingFor, error);
                }

                await ledger.SaveAsync(cancellationToken);
                var delay = retry.DelayAfter(ledger.Attempts);
                if (retry.Budget is { } budget && budget - failingFor < delay)
                {
                    delay = budget - failingFor;
                }

                await Task.Delay(delay, time, cancellationToken);
            }
        }

        activity?.SetTag("attempts", attempts);
        _records.Add(new StepRecord(name, StepOutcome.Succeeded, attempts, time.GetElapsedTime(started), null));
        foreach (var observer in observers)
        {
            observer.AfterStep(name);
        }
    }

    /// <summary>
    /// Replays the registered compensations newest first, each in its own span, until <paramref name="ended"/> says the
    /// workflow has ended (a compensation may end it: nothing older runs then). A compensation that throws stops the
    /// replay and the exception passes on (the workflow resumes later from its persisted state).
    /// </summary>
    public async Task CompensateAsync(StepFailedException failure, Func<bool> ended, CancellationToken cancellationToken)
    {
        while (_compensations.Count > 0 && !ended())
        {
            var compensation = _compensations[^1];
            _compensations.RemoveAt(_compensations.Count - 1);
            using var activity = source.StartActivity($"{spanPrefix}.compensate");
            tag?.Invoke(activity);
            activity?.SetTag("compensation", compensation.Name);
            activity?.SetTag("failed_step", failure.Step);
            var started = time.GetTimestamp();
            await compensation.Action(failure, cancellationToken);
            _records.Add(new StepRecord(compensation.Name, StepOutcome.Compensated, 1, time.GetElapsedTime(started), null));
        }
    }

    private sealed class MemoryLedger : IRetryLedger
    {
        public int Attempts { get; set; }

        public DateTimeOffset? FailingSince { get; set; }

        public Task SaveAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
