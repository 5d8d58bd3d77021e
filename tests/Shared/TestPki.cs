using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Orchestrator.Tests.Shared;

/// <summary>
/// Throwaway certificates made at test time (never committed): a CA, server certificates for 127.0.0.1 and
/// localhost, and client certificates, written as PEM files the way openssl would write them.
/// </summary>
internal static class TestPki
{
    private static readonly Oid ServerAuthentication = new("1.3.6.1.5.5.7.3.1");
    private static readonly Oid ClientAuthentication = new("1.3.6.1.5.5.7.3.2");

    public static X509Certificate2 CreateCa(string name)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: true, hasPathLengthConstraint: false, pathLengthConstraint: 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, critical: true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, critical: false));
        var now = DateTimeOffset.UtcNow;
        return request.CreateSelfSigned(now.AddDays(-2), now.AddDays(2));
    }

    /// <summary>A server certificate for 127.0.0.1, ::1 and localhost.</summary>
    public static X509Certificate2 CreateServer(X509Certificate2 ca, string name = "localhost", DateTimeOffset? notAfter = null)
    {
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("localhost");
        san.AddIpAddress(IPAddress.Loopback);
        san.AddIpAddress(IPAddress.IPv6Loopback);
        return Issue(ca, $"CN={name}", ServerAuthentication, san.Build(), notAfter);
    }

    public static X509Certificate2 CreateClient(X509Certificate2 ca, string commonName, string? organizationalUnit = null)
    {
        var subject = organizationalUnit is null ? $"CN={commonName}" : $"CN={commonName}, OU={organizationalUnit}";
        return Issue(ca, subject, ClientAuthentication, null, null);
    }

    /// <summary>Writes the certificate (and its private key, when it has one) as PEM files; returns their paths.</summary>
    public static (string Certificate, string Key) Write(X509Certificate2 certificate, string directory, string name)
    {
        Directory.CreateDirectory(directory);
        var certificatePath = Path.Combine(directory, $"{name}.crt");
        File.WriteAllText(certificatePath, certificate.ExportCertificatePem() + "\n");
        var keyPath = Path.Combine(directory, $"{name}.key");
        if (certificate.GetECDsaPrivateKey() is { } key)
        {
            File.WriteAllText(keyPath, key.ExportPkcs8PrivateKeyPem() + "\n");
        }

        return (certificatePath, keyPath);
    }

    private static X509Certificate2 Issue(X509Certificate2 ca, string subject, Oid usage, X509Extension? san, DateTimeOffset? notAfter)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, critical: true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([usage], critical: false));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, critical: false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, includeKeyIdentifier: true, includeIssuerAndSerial: false));
        if (san is not null)
        {
            request.CertificateExtensions.Add(san);
        }

        var now = DateTimeOffset.UtcNow;
        var serial = RandomNumberGenerator.GetBytes(16);
        serial[0] &= 0x7f;
        var end = notAfter ?? now.AddDays(1);
        var start = end < now ? end.AddHours(-1) : now.AddMinutes(-5);
        using var issued = request.Create(ca, start, end, serial);
        return issued.CopyWithPrivateKey(key);
    }
}
