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
    public const string TokenVariable = "ORCHESTRATOR_TOKEN";
    public const string TokenFileVariable = "ORCHESTRATOR_TOKEN_FILE";
    public const string CaCertVariable = "ORCHESTRATOR_CA_CERT";
    public const string ClientCertVariable = "ORCHESTRATOR_CLIENT_CERT";
    public const string ClientKeyVariable = "ORCHESTRATOR_CLIENT_KEY";
    public const string TokenOptionName = "--token";
    public const string TokenFileOptionName = "--token-file";
    public const string CaCertOptionName = "--ca-cert";
    public const string ClientCertOptionName = "--client-cert";
    public const string ClientKeyOptionName = "--client-key";
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

    public Option<string?> Token { get; } = new(TokenOptionName)
    {
        Description = $"Bearer token [default: ${TokenVariable}, else the file ${TokenFileVariable} names]; visible to other users in the process list, prefer {TokenFileOptionName} or the variables",
        HelpName = "TOKEN",
        Recursive = true,
    };

    public Option<string?> TokenFile { get; } = new(TokenFileOptionName)
    {
        Description = "File holding the bearer token (surrounding white space ignored)",
        HelpName = "FILE",
        Recursive = true,
    };

    public Option<string?> CaCert { get; } = new(CaCertOptionName)
    {
        Description = $"https:// only: trust only this CA (PEM) for the server's certificate, e.g. a private CA [default: ${CaCertVariable}, else the system's CAs]",
        HelpName = "FILE",
        Recursive = true,
    };

    public Option<string?> ClientCert { get; } = new(ClientCertOptionName)
    {
        Description = $"https:// only: client certificate (PEM) for mutual TLS [default: ${ClientCertVariable}]",
        HelpName = "FILE",
        Recursive = true,
    };

    public Option<string?> ClientKey { get; } = new(ClientKeyOptionName)
    {
        Description = $"Private key (PEM, unencrypted) of {ClientCertOptionName} [default: ${ClientKeyVariable}, else the certificate's own file]",
        HelpName = "FILE",
        Recursive = true,
    };

    public IEnumerable<Option> All => [Endpoint, Format, Timeout, Token, TokenFile, CaCert, ClientCert, ClientKey];

    /// <summary>
    /// Reads the options of one invocation. Throws a usage <see cref="CliException"/> for a bad endpoint, or a
    /// credential that cannot be read. Options win over variables.
    /// </summary>
    public GlobalSettings Bind(ParseResult parseResult, CliEnvironment environment)
    {
        string? fromOption = parseResult.GetValue(Endpoint);
        string? fromVariable = environment.GetVariable(EndpointVariable);
        (string text, string source) = !string.IsNullOrWhiteSpace(fromOption)
            ? (fromOption, "--endpoint")
            : !string.IsNullOrWhiteSpace(fromVariable)
                ? (fromVariable, EndpointVariable)
                : (DefaultEndpoint, "default endpoint");
        var endpoint = ParseEndpoint(text.Trim(), source);
        var token = Credentials.ReadToken(parseResult.GetValue(Token), parseResult.GetValue(TokenFile), environment.GetVariable);
        return new GlobalSettings(
            BindConnection(parseResult, environment, endpoint),
            OutputFormats.Parse(parseResult.GetValue(Format) ?? "table"),
            TimeSpan.FromSeconds(parseResult.GetValue(Timeout)),
            token);
    }

    /// <summary>
    /// TLS material for an https:// endpoint. For http:// (h2c) the options are a usage error and the variables are
    /// ignored (they may be set for other endpoints).
    /// </summary>
    private GrpcConnection BindConnection(ParseResult parseResult, CliEnvironment environment, Uri endpoint)
    {
        (string Path, string Source)? Pick(Option<string?> option, string variable) =>
            parseResult.GetValue(option) is { Length: > 0 } fromOption ? (fromOption, option.Name)
            : environment.GetVariable(variable) is { Length: > 0 } fromVariable ? (fromVariable, variable)
            : null;

        var ca = Pick(CaCert, CaCertVariable);
        var certificate = Pick(ClientCert, ClientCertVariable);
        var key = Pick(ClientKey, ClientKeyVariable);
        if (endpoint.Scheme != Uri.UriSchemeHttps)
        {
            foreach (var option in new[] { CaCert, ClientCert, ClientKey })
            {
                if (parseResult.GetValue(option) is not null)
                {
                    throw CliException.Usage($"{option.Name} needs an https:// endpoint; {endpoint.OriginalString} is plain HTTP/2 without TLS");
                }
            }

            return new GrpcConnection(endpoint);
        }

        if (key is not null && certificate is null)
        {
            throw CliException.Usage($"{key.Value.Source} needs {ClientCertOptionName} (or {ClientCertVariable})");
        }

        return new GrpcConnection(
            endpoint,
            ca is { } c ? Credentials.ReadCa(c.Path, c.Source) : null,
            certificate is { } cert ? Credentials.ReadClientCertificate(cert.Path, cert.Source, key?.Path, key?.Source) : null);
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

/// <summary>One invocation's global settings. The token is kept out of ToString (see <see cref="BearerToken"/>).</summary>
internal sealed record GlobalSettings(GrpcConnection Connection, OutputFormat Format, TimeSpan Timeout, BearerToken? Token = null)
{
    public Uri Endpoint => Connection.Endpoint;
}
