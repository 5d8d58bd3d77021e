using System.Globalization;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Orchestrator.Silo.Configuration;

namespace Orchestrator.Silo.Security;

/// <summary>
/// The gRPC port's security as loaded at start from the files Orchestrator:Security names: the server
/// certificate (TLS), the CA client certificates must chain to (mutual TLS) with the role of each certificate
/// name, and the tokens file. Open (no authentication) when neither tokens nor client certificates are set.
/// </summary>
internal sealed class ApiSecurity
{
    private const string P = OrchestratorSettings.Section + ":Security";

    private ApiSecurity(
        X509Certificate2? serverCertificate,
        X509Certificate2Collection? serverChain,
        X509Certificate2Collection? clientCa,
        IReadOnlyDictionary<string, Role> certificateRoles,
        string? tokensFile,
        TokenFileResult? tokens)
    {
        ServerCertificate = serverCertificate;
        ServerChain = serverChain;
        ClientCa = clientCa;
        CertificateRoles = certificateRoles;
        TokensFile = tokensFile;
        Tokens = tokens;
    }

    /// <summary>No TLS, no authentication: today's loopback default.</summary>
    public static ApiSecurity None { get; } = new(null, null, null, new Dictionary<string, Role>(), null, null);

    /// <summary>TLS on the gRPC port, with this certificate and key.</summary>
    public X509Certificate2? ServerCertificate { get; }

    /// <summary>Intermediates sent after the server certificate (the rest of its PEM file).</summary>
    public X509Certificate2Collection? ServerChain { get; }

    /// <summary>Mutual TLS: client certificates must chain to one of these.</summary>
    public X509Certificate2Collection? ClientCa { get; }

    /// <summary>Role of each client certificate by subject CN (case-insensitive, like configuration keys).</summary>
    public IReadOnlyDictionary<string, Role> CertificateRoles { get; }

    /// <summary>The tokens file, when bearer tokens are accepted.</summary>
    public string? TokensFile { get; }

    /// <summary>The tokens file as read at start (the <see cref="TokenStore"/> starts from it).</summary>
    public TokenFileResult? Tokens { get; }

    /// <summary>Nobody has to authenticate: every caller may call everything.</summary>
    public bool Open => TokensFile is null && ClientCa is null;

    /// <summary>
    /// Loads every file the settings name (already checked by <see cref="OrchestratorSettingsValidator"/> for
    /// their shape); each problem names its setting, and for the tokens file the file and line.
    /// </summary>
    public static (ApiSecurity? Security, IReadOnlyList<string> Errors) Load(SecuritySettings settings, DateTimeOffset now)
    {
        var errors = new List<string>();
        X509Certificate2? certificate = null;
        X509Certificate2Collection? chain = null;
        var tls = settings.Tls;
        if (IsSet(tls.CertificatePath) && IsSet(tls.KeyPath))
        {
            var certificateFound = FileExists(errors, $"{P}:Tls:CertificatePath", tls.CertificatePath!);
            var keyFound = FileExists(errors, $"{P}:Tls:KeyPath", tls.KeyPath!);
            if (certificateFound && keyFound)
            {
                try
                {
                    certificate = X509Certificate2.CreateFromPemFile(tls.CertificatePath!, tls.KeyPath);
                    var all = new X509Certificate2Collection();
                    all.ImportFromPemFile(tls.CertificatePath!);
                    chain = [.. all.Skip(1)];
                    if (certificate.NotAfter.ToUniversalTime() < now.UtcDateTime)
                    {
                        errors.Add($"{P}:Tls:CertificatePath: the certificate in '{tls.CertificatePath}' expired on {certificate.NotAfter.ToUniversalTime().ToString("u", CultureInfo.InvariantCulture)}");
                    }
                }
                catch (Exception e) when (e is CryptographicException or ArgumentException or IOException or UnauthorizedAccessException)
                {
                    errors.Add($"{P}:Tls:CertificatePath / {P}:Tls:KeyPath: cannot load the certificate '{tls.CertificatePath}' with the key '{tls.KeyPath}' (PEM, unencrypted key, matching the certificate): {e.Message}");
                }
            }
        }

        X509Certificate2Collection? clientCa = null;
        if (IsSet(tls.ClientCaPath) && FileExists(errors, $"{P}:Tls:ClientCaPath", tls.ClientCaPath!))
        {
            try
            {
                clientCa = [];
                clientCa.ImportFromPemFile(tls.ClientCaPath!);
                if (clientCa.Count == 0)
                {
                    errors.Add($"{P}:Tls:ClientCaPath: '{tls.ClientCaPath}' holds no PEM certificate");
                }
            }
            catch (Exception e) when (e is CryptographicException or IOException or UnauthorizedAccessException)
            {
                errors.Add($"{P}:Tls:ClientCaPath: cannot read the CA certificates in '{tls.ClientCaPath}': {e.Message}");
            }
        }

        var roles = new Dictionary<string, Role>(StringComparer.OrdinalIgnoreCase);
        foreach (var (name, roleName) in settings.ClientCertificates)
        {
            if (Roles.TryParse(roleName, out var role))
            {
                roles[name] = role;
            }
        }

        string? tokensFile = null;
        TokenFileResult? tokens = null;
        if (IsSet(settings.TokensFile) && FileExists(errors, $"{P}:TokensFile", settings.TokensFile!))
        {
            tokensFile = Path.GetFullPath(settings.TokensFile!);
            tokens = TokenFile.Read(tokensFile);
            errors.AddRange(tokens.Errors.Select(e => $"{P}:TokensFile: {e}"));
        }

        return errors.Count > 0
            ? (null, errors)
            : (new ApiSecurity(certificate, chain, clientCa, roles, tokensFile, tokens), errors);
    }

    internal static bool IsSet(string? value) => !string.IsNullOrWhiteSpace(value);

    private static bool FileExists(List<string> errors, string key, string path)
    {
        if (File.Exists(path))
        {
            return true;
        }

        errors.Add(Directory.Exists(path) ? $"{key}: '{path}' is a directory, not a file" : $"{key}: file '{path}' not found");
        return false;
    }
}
