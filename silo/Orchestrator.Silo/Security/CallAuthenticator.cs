using System.Security.Cryptography.X509Certificates;

namespace Orchestrator.Silo.Security;

/// <summary>Who made a call: the token's or certificate's name, its role, and how it was recognised.</summary>
internal sealed record Caller(string Name, Role Role, string Via)
{
    public const string ViaToken = "token";
    public const string ViaCertificate = "certificate";
    public const string ViaOpen = "open";

    /// <summary>The caller of an open API (no authentication configured): may do everything.</summary>
    public static Caller Anonymous { get; } = new("anonymous", Role.Admin, ViaOpen);
}

/// <summary>The caller, or why none could be recognised (never containing the token).</summary>
internal readonly record struct Authentication(Caller? Caller, string? Problem);

/// <summary>
/// Recognises the caller of one call. With an open API everybody is <see cref="Caller.Anonymous"/>. Otherwise a
/// bearer token is used when the server accepts tokens (a wrong one is refused, never skipped), else the client
/// certificate, which Kestrel has already checked against the client CA, by its subject CN.
/// </summary>
internal sealed class CallAuthenticator(ApiSecurity security, TokenStore? tokens)
{
    private const string BearerScheme = "Bearer ";

    public Authentication Authenticate(string? authorization, X509Certificate2? certificate)
    {
        if (security.Open)
        {
            return new(Caller.Anonymous, null);
        }

        if (authorization is not null && tokens is not null)
        {
            if (!authorization.StartsWith(BearerScheme, StringComparison.OrdinalIgnoreCase) || authorization.Length == BearerScheme.Length)
            {
                return new(null, "the authorization header is not 'Bearer <token>'");
            }

            var entry = tokens.Find(authorization[BearerScheme.Length..].Trim());
            return entry is null
                ? new(null, "unknown bearer token")
                : new(new Caller(entry.Name, entry.Role, Caller.ViaToken), null);
        }

        if (certificate is not null && security.ClientCa is not null)
        {
            var commonName = CommonName(certificate);
            if (commonName is null)
            {
                return new(null, $"the client certificate '{certificate.Subject}' has not exactly one subject CN");
            }

            return security.CertificateRoles.TryGetValue(commonName, out var role)
                ? new(new Caller(commonName, role, Caller.ViaCertificate), null)
                : new(null, $"the client certificate CN={commonName} has no role (Orchestrator:Security:ClientCertificates:{commonName})");
        }

        var accepted = (tokens is not null, security.ClientCa is not null) switch
        {
            (true, true) => "a bearer token or a client certificate",
            (true, false) => "a bearer token",
            _ => "a client certificate (bearer tokens are not enabled)",
        };
        return new(null, $"no credentials: this server accepts {accepted}");
    }

    /// <summary>The subject's one common name (OID 2.5.4.3), or null when it has none or several.</summary>
    internal static string? CommonName(X509Certificate2 certificate)
    {
        string? found = null;
        foreach (var rdn in certificate.SubjectName.EnumerateRelativeDistinguishedNames())
        {
            if (rdn.HasMultipleElements || rdn.GetSingleElementType().Value != "2.5.4.3")
            {
                continue;
            }

            if (found is not null)
            {
                return null;
            }

            found = rdn.GetSingleElementValue();
        }

        return string.IsNullOrEmpty(found) ? null : found;
    }
}
