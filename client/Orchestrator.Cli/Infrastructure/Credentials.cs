using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Orchestrator.Cli.Errors;

namespace Orchestrator.Cli.Infrastructure;

/// <summary>
/// A bearer token and where it came from. <see cref="ToString"/> never shows the token: it is only ever written
/// into the authorization header.
/// </summary>
internal sealed class BearerToken(string value, string source)
{
    public string Value { get; } = value;

    /// <summary>The option or variable it came from (<c>--token</c>, <c>ORCHESTRATOR_TOKEN_FILE</c>, ...).</summary>
    public string Source { get; } = source;

    public override string ToString() => $"(token from {Source})";
}

/// <summary>How to open the channel: the endpoint, and for https:// the CA to trust and the client certificate.</summary>
internal sealed record GrpcConnection(Uri Endpoint, X509Certificate2Collection? TrustedCa = null, X509Certificate2? ClientCertificate = null)
{
    public bool Tls => Endpoint.Scheme == Uri.UriSchemeHttps;

    /// <summary>True when the endpoint's host is this machine (127.0.0.0/8, ::1, localhost).</summary>
    public bool Loopback => Endpoint.IsLoopback || (IPAddress.TryParse(Endpoint.Host.Trim('[', ']'), out var address) && IPAddress.IsLoopback(address));
}

/// <summary>Reads the credential options and variables; every problem is a usage error naming its source (never the token).</summary>
internal static class Credentials
{
    public static BearerToken? ReadToken(string? option, string? optionFile, Func<string, string?> variable)
    {
        if (option is not null && optionFile is not null)
        {
            throw CliException.Usage($"{GlobalOptions.TokenOptionName} and {GlobalOptions.TokenFileOptionName} cannot be combined");
        }

        if (option is not null)
        {
            return Check(option, GlobalOptions.TokenOptionName);
        }

        if (optionFile is not null)
        {
            return FromFile(optionFile, GlobalOptions.TokenFileOptionName);
        }

        if (variable(GlobalOptions.TokenVariable) is { Length: > 0 } fromVariable)
        {
            return Check(fromVariable, GlobalOptions.TokenVariable);
        }

        return variable(GlobalOptions.TokenFileVariable) is { Length: > 0 } file ? FromFile(file, GlobalOptions.TokenFileVariable) : null;
    }

    public static X509Certificate2Collection ReadCa(string path, string source)
    {
        var collection = new X509Certificate2Collection();
        try
        {
            collection.ImportFromPemFile(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or CryptographicException)
        {
            throw CliException.Usage($"{source}: cannot read the CA certificate '{path}': {e.Message}");
        }

        return collection.Count > 0 ? collection : throw CliException.Usage($"{source}: '{path}' holds no PEM certificate");
    }

    public static X509Certificate2 ReadClientCertificate(string certificatePath, string certificateSource, string? keyPath, string? keySource)
    {
        try
        {
            // Without a key file the key is read from the certificate's own file (one PEM with both).
            return X509Certificate2.CreateFromPemFile(certificatePath, keyPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or CryptographicException or ArgumentException)
        {
            var what = keyPath is null
                ? $"{certificateSource}: cannot read the client certificate and its key from '{certificatePath}' (without {GlobalOptions.ClientKeyOptionName} the key must be in the same PEM file)"
                : $"{certificateSource} / {keySource}: cannot read the client certificate '{certificatePath}' with the key '{keyPath}' (PEM, unencrypted key of this certificate)";
            throw CliException.Usage($"{what}: {e.Message}");
        }
    }

    private static BearerToken FromFile(string path, string source)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw CliException.Usage($"{source}: cannot read the token file '{path}': {e.Message}");
        }

        return Check(text.Trim(), $"{source} ('{path}')");
    }

    private static BearerToken Check(string token, string source)
    {
        if (token.Length == 0)
        {
            throw CliException.Usage($"{source}: the token is empty");
        }

        // Visible ASCII only: it goes into an HTTP/2 header. The token itself is never repeated in a message.
        if (token.Any(c => c is <= ' ' or > '~'))
        {
            throw CliException.Usage($"{source}: the token contains spaces, control or non-ASCII characters");
        }

        return new BearerToken(token, source);
    }
}
