using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Orchestrator.Silo.Security;

/// <summary>
/// Kestrel's check of a client certificate during the TLS handshake: it must chain to one of the configured
/// client CA certificates (only those; the system's roots do not count), be valid now, and allow client
/// authentication when it restricts its usage. A refused certificate ends the handshake.
/// </summary>
internal sealed partial class ClientCertificateTrust(X509Certificate2Collection clientCa, ILogger<ClientCertificateTrust> logger)
{
    private static readonly Oid ClientAuthentication = new("1.3.6.1.5.5.7.3.2");

    public bool Validate(X509Certificate2 certificate, X509Chain? presented, SslPolicyErrors errors)
    {
        var trusted = IsTrusted(certificate, presented, clientCa, out var reason);
        if (!trusted)
        {
            LogRefused(logger, certificate.Subject, reason);
        }

        return trusted;
    }

    public static bool IsTrusted(X509Certificate2 certificate, X509Chain? presented, X509Certificate2Collection clientCa, out string reason)
    {
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(clientCa);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.ApplicationPolicy.Add(ClientAuthentication);
        if (presented is not null)
        {
            // Intermediates the client sent along.
            foreach (var element in presented.ChainElements.Skip(1))
            {
                chain.ChainPolicy.ExtraStore.Add(element.Certificate);
            }
        }

        if (chain.Build(certificate))
        {
            reason = "";
            return true;
        }

        reason = string.Join("; ", chain.ChainStatus.Select(s => $"{s.Status}: {s.StatusInformation.Trim()}"));
        return false;
    }
}
