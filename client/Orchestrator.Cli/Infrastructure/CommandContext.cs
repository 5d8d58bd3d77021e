using System.Text.Json.Serialization.Metadata;
using Grpc.Core;
using Orchestrator.Cli.Errors;
using Orchestrator.Cli.Output;

namespace Orchestrator.Cli.Infrastructure;

/// <summary>Everything a command body needs for one invocation: the connection, the settings and the output.</summary>
internal sealed class CommandContext(
    GlobalSettings settings,
    CallInvoker callInvoker,
    TextWriter stdout,
    TextWriter stderr,
    bool color,
    bool interactive,
    TimeProvider clock,
    Func<int?>? terminalWidth = null)
{
    public GlobalSettings Settings { get; } = settings;

    public CallInvoker CallInvoker { get; } = callInvoker;

    public TextWriter Out { get; } = stdout;

    public TextWriter Error { get; } = stderr;

    public bool Color { get; } = color;

    /// <summary>stdout is a terminal: a live view may redraw in place (only with table output).</summary>
    public bool Interactive { get; } = interactive;

    public TimeProvider Clock { get; } = clock;

    /// <summary>Columns of the terminal, for live views; null when unknown.</summary>
    public Func<int?> TerminalWidth { get; } = terminalWidth ?? (() => null);

    /// <summary>Options for one call: the --timeout deadline, counted from now, and cancellation.</summary>
    public CallOptions CallOptions(CancellationToken cancellationToken) =>
        new(deadline: DateTime.UtcNow.Add(Settings.Timeout), cancellationToken: cancellationToken);

    /// <summary>A note for people on stderr; never mixed into stdout, so JSON stays one document.</summary>
    public void Warn(string message) => Error.WriteLine($"warning: {message}");

    /// <summary>
    /// Hosts a fleet-wide listing could not reach: an error when it is the one host asked for
    /// (<paramref name="requestedHost"/>), else a warning per host saying which <paramref name="what"/> are missing.
    /// </summary>
    public void ReportUnavailableHosts(IEnumerable<string> unavailableHosts, string requestedHost, string what)
    {
        var hosts = unavailableHosts.Order(StringComparer.Ordinal).ToList();
        if (requestedHost.Length > 0 && hosts.Contains(requestedHost))
        {
            // The one host asked for could not answer: an error, not an empty list.
            throw new CliException(ExitCodes.Unavailable, $"host {requestedHost} is unavailable: its silo is down");
        }

        foreach (var host in hosts)
        {
            Warn($"host {host} is unavailable (its silo is down); its {what} are not listed");
        }
    }

    /// <summary>Writes the result in the chosen format: one JSON document, or a table.</summary>
    public void Render<T>(T value, JsonTypeInfo<T> json, Action<T, TextWriter, bool> table)
    {
        if (Settings.Format == OutputFormat.Json)
        {
            JsonOutput.Write(Out, value, json);
        }
        else
        {
            table(value, Out, Color);
        }
    }
}
