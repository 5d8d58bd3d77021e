using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace Orchestrator.Grains;

/// <summary>The activity source and meter of the orchestrator's own spans and metrics.</summary>
public static class Telemetry
{
    public const string Name = "Orchestrator";

    public static readonly ActivitySource Source = new(Name, typeof(Telemetry).Assembly.GetName().Version?.ToString());

    public static readonly Meter Meter = new(Name, typeof(Telemetry).Assembly.GetName().Version?.ToString());
}
