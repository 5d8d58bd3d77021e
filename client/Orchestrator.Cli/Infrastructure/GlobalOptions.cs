using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using Orchestrator.Cli.Errors;
using Orchestrator.Cli.Output;

namespace Orchestrator.Cli.Infrastructure;

/// <summary>Options every command accepts, before or after the command words.</summary>
internal sealed class GlobalOptions
{
    public const string EndpointVariable = "ORCHESTRATOR_ENDPOINT";
    public const string DefaultEndpoint = "http://127.0.0.1:7070";
    public const double DefaultTimeoutSeconds = 30;
    public const double MaxTimeoutSeconds = 24 * 60 * 60;

    public GlobalOptions()
    {
        Format.AcceptOnlyFromAmong(OutputFormats.Names);
    }

    public Option<string?> Endpoint { get; } = new("--endpoint")
    {
        Description = $"gRPC endpoint of any silo [default: ${EndpointVariable}, else {DefaultEndpoint}]",
        HelpName = "URL",
        Recursive = true,
    };

    public Option<string> Format { get; } = new("--format")
    {
        Description = "Output format: table for people, json for scripts",
        HelpName = "table|json",
        DefaultValueFactory = _ => "table",
        Recursive = true,
    };

    public Option<double> Timeout { get; } = new("--timeout")
    {
        Description = "Seconds to wait for the server's answer",
        HelpName = "SECONDS",
        DefaultValueFactory = _ => DefaultTimeoutSeconds,
        CustomParser = ParseTimeout,
        Recursive = true,
    };

    public IEnumerable<Option> All => [Endpoint, Format, Timeout];

    /// <summary>Reads the options of one invocation. Throws a usage <see cref="CliException"/> for a bad endpoint.</summary>
    public GlobalSettings Bind(ParseResult parseResult, CliEnvironment environment)
    {
        string? fromOption = parseResult.GetValue(Endpoint);
        string? fromVariable = environment.GetVariable(EndpointVariable);
        (string text, string source) = !string.IsNullOrWhiteSpace(fromOption)
            ? (fromOption, "--endpoint")
            : !string.IsNullOrWhiteSpace(fromVariable)
                ? (fromVariable, EndpointVariable)
                : (DefaultEndpoint, "default endpoint");
        return new GlobalSettings(
            ParseEndpoint(text.Trim(), source),
            OutputFormats.Parse(parseResult.GetValue(Format) ?? "table"),
            TimeSpan.FromSeconds(parseResult.GetValue(Timeout)));
    }

    /// <summary>Seconds, in invariant culture ("0.5" everywhere), more than 0 and at most a day.</summary>
    private static double ParseTimeout(ArgumentResult result)
    {
        if (result.Tokens.Count == 0)
        {
            return DefaultTimeoutSeconds;
        }

        string text = result.Tokens[0].Value;
        if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double seconds)
            && seconds > 0
            && seconds <= MaxTimeoutSeconds)
        {
            return seconds;
        }

        result.AddError($"--timeout: '{text}' is not a number of seconds more than 0 and at most {MaxTimeoutSeconds}");
        return DefaultTimeoutSeconds;
    }

    internal static Uri ParseEndpoint(string text, string source)
    {
        if (Uri.TryCreate(text, UriKind.Absolute, out Uri? uri)
            && (uri.Scheme == Uri.UriSchemeHttp || uri.Scheme == Uri.UriSchemeHttps)
            && uri.Host.Length > 0)
        {
            return uri;
        }

        throw CliException.Usage($"{source}: '{text}' is not an http:// or https:// URL (e.g. {DefaultEndpoint})");
    }
}

internal sealed record GlobalSettings(Uri Endpoint, OutputFormat Format, TimeSpan Timeout);
