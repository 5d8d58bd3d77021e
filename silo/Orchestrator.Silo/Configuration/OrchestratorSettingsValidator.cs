using System.Net;

namespace Orchestrator.Silo.Configuration;

/// <summary>Thrown at start for a missing or wrong setting; the message names the setting.</summary>
public sealed class SettingsException(IReadOnlyList<string> errors)
    : Exception("invalid configuration:\n  " + string.Join("\n  ", errors))
{
    public IReadOnlyList<string> Errors { get; } = errors;
}

public static class OrchestratorSettingsValidator
{
    /// <summary>Every problem with the settings, each naming its setting as a configuration key.</summary>
    public static IReadOnlyList<string> Validate(OrchestratorSettings s)
    {
        var errors = new List<string>();
        const string P = OrchestratorSettings.Section;

        if (string.IsNullOrWhiteSpace(s.Host.Name))
        {
            errors.Add($"{P}:Host:Name is required: the name of the hypervisor host this silo serves (e.g. kvm-01)");
        }
        else
        {
            try
            {
                GrainKeys.ValidateHost(s.Host.Name, $"{P}:Host:Name");
            }
            catch (OrchestratorException e)
            {
                errors.Add(e.Message);
            }
        }

        if (string.IsNullOrWhiteSpace(s.Host.Uri))
        {
            errors.Add($"{P}:Host:Uri is required: a libvirt URI such as qemu:///system, or simulated://NAME");
        }
        else if (!System.Uri.TryCreate(s.Host.Uri, UriKind.Absolute, out _))
        {
            errors.Add($"{P}:Host:Uri: '{s.Host.Uri}' is not an absolute URI");
        }

        ValidateSimulated(errors, s.Host);

        switch (s.Persistence.Mode)
        {
            case PersistenceMode.Embedded when string.IsNullOrWhiteSpace(s.Persistence.SqlitePath):
                errors.Add($"{P}:Persistence:SqlitePath is required in embedded mode");
                break;
            case PersistenceMode.Cluster when string.IsNullOrWhiteSpace(s.Persistence.PostgresConnectionString):
                errors.Add($"{P}:Persistence:PostgresConnectionString is required in cluster mode (Npgsql connection string)");
                break;
        }

        if (s.Persistence.MaxConcurrentStorageCalls is < 0 or > 10_000)
        {
            errors.Add($"{P}:Persistence:MaxConcurrentStorageCalls must be between 0 (the connection pool's size) and 10000");
        }

        if (s.Persistence.StorageWaitTimeout < TimeSpan.FromSeconds(1) || s.Persistence.StorageWaitTimeout > TimeSpan.FromHours(1))
        {
            errors.Add($"{P}:Persistence:StorageWaitTimeout must be between 00:00:01 and 01:00:00");
        }

        CheckPort(errors, $"{P}:Cluster:SiloPort", s.Cluster.SiloPort);
        CheckPort(errors, $"{P}:Endpoints:GrpcPort", s.Endpoints.GrpcPort);
        CheckPort(errors, $"{P}:Endpoints:HttpPort", s.Endpoints.HttpPort);
        if (s.Endpoints.GrpcPort == s.Endpoints.HttpPort)
        {
            errors.Add($"{P}:Endpoints:GrpcPort and {P}:Endpoints:HttpPort must differ (gRPC is HTTP/2 only and needs its own port)");
        }

        if (s.Endpoints.MaxRequestBytes is < 64 * 1024 or > 64 * 1024 * 1024)
        {
            errors.Add($"{P}:Endpoints:MaxRequestBytes: {s.Endpoints.MaxRequestBytes} is not between 65536 (64 KiB) and 67108864 (64 MiB)");
        }

        if (s.Endpoints.MaxResponseBytes is < 1024 * 1024 or > 256 * 1024 * 1024)
        {
            errors.Add($"{P}:Endpoints:MaxResponseBytes: {s.Endpoints.MaxResponseBytes} is not between 1048576 (1 MiB) and 268435456 (256 MiB)");
        }

        if (!IPAddress.TryParse(s.Endpoints.BindAddress, out var bindAddress))
        {
            errors.Add($"{P}:Endpoints:BindAddress: '{s.Endpoints.BindAddress}' is not an IP address");
        }

        ValidateSecurity(errors, s.Security, bindAddress);

        if (!IPAddress.TryParse(s.Cluster.AdvertisedAddress, out _))
        {
            errors.Add($"{P}:Cluster:AdvertisedAddress: '{s.Cluster.AdvertisedAddress}' is not an IP address");
        }

        if (string.IsNullOrWhiteSpace(s.Cluster.ClusterId))
        {
            errors.Add($"{P}:Cluster:ClusterId is required");
        }

        if (string.IsNullOrWhiteSpace(s.Cluster.ServiceId))
        {
            errors.Add($"{P}:Cluster:ServiceId is required");
        }

        if (s.InventorySyncInterval < TimeSpan.FromSeconds(1))
        {
            errors.Add($"{P}:InventorySyncInterval must be at least 00:00:01");
        }

        if (s.Host.CallTimeout < TimeSpan.FromSeconds(1) || s.Host.CallTimeout > TimeSpan.FromMinutes(10))
        {
            errors.Add($"{P}:Host:CallTimeout must be between 00:00:01 and 00:10:00");
        }

        return errors;
    }

    /// <summary>
    /// Settings that no longer exist but would be dangerous to ignore silently: the Orleans gateway port. The silo
    /// serves no gateway (an Orleans client there would reach the grains past TLS, tokens and roles); 0 means off
    /// and is accepted.
    /// </summary>
    public static IReadOnlyList<string> ValidateRemoved(Microsoft.Extensions.Configuration.IConfiguration configuration)
    {
        const string Key = OrchestratorSettings.Section + ":Cluster:GatewayPort";
        return configuration[Key] is { } value && value.Trim() != "0"
            ? [$"{Key} is not supported: the silo serves no Orleans gateway (clients use gRPC on {OrchestratorSettings.Section}:Endpoints:GrpcPort); remove the setting or set it to 0"]
            : [];
    }

    /// <summary>Problems with the backup settings (section Orchestrator:Backup).</summary>
    public static IReadOnlyList<string> Validate(Grains.Backups.BackupOptions backup)
    {
        var errors = new List<string>();
        const string P = OrchestratorSettings.Section + ":Backup";
        for (var i = 0; i < backup.Roots.Count; i++)
        {
            if (!Path.IsPathFullyQualified(backup.Roots[i]))
            {
                errors.Add($"{P}:Roots:{i}: '{backup.Roots[i]}' is not an absolute path");
            }
        }

        if (backup.DefaultTarget is { Length: > 0 } target && errors.Count == 0)
        {
            try
            {
                Grains.Backups.BackupTargets.Resolve(target, backup, $"{P}:DefaultTarget");
            }
            catch (OrchestratorException e)
            {
                errors.Add(e.Message);
            }
        }

        for (var i = 0; i < backup.RestoreRoots.Count; i++)
        {
            if (!Path.IsPathFullyQualified(backup.RestoreRoots[i]))
            {
                errors.Add($"{P}:RestoreRoots:{i}: '{backup.RestoreRoots[i]}' is not an absolute path");
            }
        }

        if (backup.FileGroup is { Length: > 0 } group && Hypervisor.SafeFiles.LookupGroup(group) is null)
        {
            errors.Add($"{P}:FileGroup: no group named '{group}' on this host");
        }

        if (backup.HistoryLimit < 1)
        {
            errors.Add($"{P}:HistoryLimit must be at least 1");
        }

        if (backup.ParallelCopies is < 1 or > 64)
        {
            errors.Add($"{P}:ParallelCopies must be between 1 and 64");
        }

        if (backup.MaxConcurrentTestRestores is < 1 or > 64)
        {
            errors.Add($"{P}:MaxConcurrentTestRestores must be between 1 and 64");
        }

        if (backup.TestRestoreMemoryReserveMiB is < 0 or > 1_048_576)
        {
            errors.Add($"{P}:TestRestoreMemoryReserveMiB must be between 0 and 1048576");
        }

        if (!double.IsFinite(backup.TestRestoreCpuOvercommit) || backup.TestRestoreCpuOvercommit is < 0.1 or > 64)
        {
            errors.Add($"{P}:TestRestoreCpuOvercommit must be between 0.1 and 64");
        }

        if (backup.MaxConcurrentPerSilo is < 1 or > 100_000)
        {
            errors.Add($"{P}:MaxConcurrentPerSilo must be between 1 and 100000");
        }

        if (backup.QueueTimeout < TimeSpan.FromSeconds(1) || backup.QueueTimeout > TimeSpan.FromDays(1))
        {
            errors.Add($"{P}:QueueTimeout must be between 00:00:01 and 1.00:00:00");
        }

        if (backup.ReconcileInterval < TimeSpan.FromSeconds(1))
        {
            errors.Add($"{P}:ReconcileInterval must be at least 00:00:01");
        }

        if (backup.FinishAttempts is < 1 or > 1000)
        {
            errors.Add($"{P}:FinishAttempts must be between 1 and 1000");
        }

        if (backup.FinishRetryBudget < TimeSpan.FromSeconds(1) || backup.FinishRetryBudget > TimeSpan.FromDays(1))
        {
            errors.Add($"{P}:FinishRetryBudget must be between 00:00:01 and 1.00:00:00");
        }

        if (backup.FinishRetryDelay < TimeSpan.FromMilliseconds(10) || backup.FinishRetryDelay > TimeSpan.FromMinutes(1))
        {
            errors.Add($"{P}:FinishRetryDelay must be between 00:00:00.01 and 00:01:00");
        }

        if (backup.KillAt is { Length: > 0 } kill && !Orchestrator.Grains.Backups.CrashTestObserver.Points.Contains(kill))
        {
            errors.Add($"{P}:KillAt: '{kill}' is not a crash-test point ({string.Join(", ", Orchestrator.Grains.Backups.CrashTestObserver.Points)})");
        }

        return errors;
    }

    /// <summary>Problems with the policy settings (section Orchestrator:Policies).</summary>
    public static IReadOnlyList<string> Validate(Grains.Policies.PolicyOptions policies)
    {
        var errors = new List<string>();
        const string P = OrchestratorSettings.Section + ":Policies";
        if (policies.RetryInterval < TimeSpan.FromMilliseconds(100))
        {
            errors.Add($"{P}:RetryInterval must be at least 00:00:00.1");
        }

        if (policies.AdmissionInterval < TimeSpan.FromMilliseconds(10) || policies.AdmissionInterval > TimeSpan.FromMinutes(1))
        {
            errors.Add($"{P}:AdmissionInterval must be between 00:00:00.01 and 00:01:00");
        }

        if (policies.CheckpointInterval < TimeSpan.FromMilliseconds(10) || policies.CheckpointInterval > TimeSpan.FromMinutes(5))
        {
            errors.Add($"{P}:CheckpointInterval must be between 00:00:00.01 and 00:05:00");
        }

        if (policies.UnreachableGrace < TimeSpan.Zero)
        {
            errors.Add($"{P}:UnreachableGrace cannot be negative");
        }

        if (policies.BusyWait < TimeSpan.Zero)
        {
            errors.Add($"{P}:BusyWait cannot be negative");
        }

        if (policies.RunHistoryLimit < 1)
        {
            errors.Add($"{P}:RunHistoryLimit must be at least 1");
        }

        if (policies.ComplianceMetricsInterval < TimeSpan.FromMilliseconds(100))
        {
            errors.Add($"{P}:ComplianceMetricsInterval must be at least 00:00:00.1");
        }

        return errors;
    }

    /// <summary>Problems with the fleet index settings (section Orchestrator:FleetIndex).</summary>
    public static IReadOnlyList<string> Validate(Grains.Fleet.FleetIndexOptions index)
    {
        var errors = new List<string>();
        const string P = OrchestratorSettings.Section + ":FleetIndex";
        if (index.ProtectionFlushQuietDelay < TimeSpan.FromMilliseconds(10) || index.ProtectionFlushQuietDelay > TimeSpan.FromMinutes(5))
        {
            errors.Add($"{P}:ProtectionFlushQuietDelay must be between 00:00:00.01 and 00:05:00");
        }

        if (index.ProtectionFlushMaxDelay < index.ProtectionFlushQuietDelay || index.ProtectionFlushMaxDelay > TimeSpan.FromMinutes(30))
        {
            errors.Add($"{P}:ProtectionFlushMaxDelay must be at least ProtectionFlushQuietDelay and at most 00:30:00");
        }

        if (index.QueryFanOut is < 1 or > 1024)
        {
            errors.Add($"{P}:QueryFanOut must be between 1 and 1024");
        }

        if (index.InventoryFanOut is < 1 or > 1024)
        {
            errors.Add($"{P}:InventoryFanOut must be between 1 and 1024");
        }

        return errors;
    }

    /// <summary>
    /// The shape of Orchestrator:Security (the files themselves are read by ApiSecurity.Load): TLS paths in
    /// pairs, client certificates only with a CA and each mapped to a known role, and no open API off loopback.
    /// </summary>
    private static void ValidateSecurity(List<string> errors, SecuritySettings security, IPAddress? bindAddress)
    {
        const string P = OrchestratorSettings.Section + ":Security";
        var tls = security.Tls;
        var hasCertificate = IsSet(tls.CertificatePath);
        var hasKey = IsSet(tls.KeyPath);
        if (hasCertificate != hasKey)
        {
            errors.Add(hasCertificate
                ? $"{P}:Tls:KeyPath is required with {P}:Tls:CertificatePath (the certificate's private key, PEM)"
                : $"{P}:Tls:CertificatePath is required with {P}:Tls:KeyPath (the server certificate, PEM)");
        }

        var hasTls = hasCertificate && hasKey;
        var hasClientCa = IsSet(tls.ClientCaPath);
        if (hasClientCa && !hasTls)
        {
            errors.Add($"{P}:Tls:ClientCaPath needs TLS: set {P}:Tls:CertificatePath and {P}:Tls:KeyPath too (client certificates are only sent over TLS)");
        }

        if (hasClientCa && security.ClientCertificates.Count == 0)
        {
            errors.Add($"{P}:ClientCertificates is empty: map each client certificate's subject CN to a role ({P}:ClientCertificates:<CN> = {Silo.Security.Roles.Names}), or remove {P}:Tls:ClientCaPath");
        }

        if (!hasClientCa && security.ClientCertificates.Count > 0)
        {
            errors.Add($"{P}:ClientCertificates needs {P}:Tls:ClientCaPath: the CA that client certificates must chain to");
        }

        foreach (var (name, role) in security.ClientCertificates.OrderBy(c => c.Key, StringComparer.Ordinal))
        {
            if (!Silo.Security.Roles.TryParse(role, out _))
            {
                errors.Add($"{P}:ClientCertificates:{name}: unknown role '{role}' (expected {Silo.Security.Roles.Names})");
            }
        }

        var hasAuthentication = IsSet(security.TokensFile) || hasClientCa;
        if (bindAddress is not null && !IPAddress.IsLoopback(bindAddress) && !(hasTls && hasAuthentication) && !security.AllowInsecureRemote)
        {
            var missing = (hasTls, hasAuthentication) switch
            {
                (false, false) => "neither TLS nor authentication",
                (false, true) => "no TLS (tokens would cross the network in clear text)",
                _ => "no authentication (anyone who reaches it may call every RPC)",
            };
            errors.Add($"{OrchestratorSettings.Section}:Endpoints:BindAddress is {bindAddress}, not a loopback address, but the gRPC port has {missing}: " +
                $"set {P}:Tls:CertificatePath and {P}:Tls:KeyPath, and {P}:TokensFile or {P}:Tls:ClientCaPath with {P}:ClientCertificates; " +
                $"or set {P}:AllowInsecureRemote=true to serve it anyway");
        }
    }

    /// <summary>Orchestrator:Host:Simulated: in range, and a seeded fleet only on a simulated:// host.</summary>
    private static void ValidateSimulated(List<string> errors, HostSettings host)
    {
        const string P = OrchestratorSettings.Section + ":Host:Simulated";
        var simulated = host.Simulated;
        if (simulated.Vms is < 0 or > SimulatedHostSettings.MaxVms)
        {
            errors.Add($"{P}:Vms: {simulated.Vms} is not between 0 and {SimulatedHostSettings.MaxVms}");
        }
        else if (simulated.Vms > 0 && !(System.Uri.TryCreate(host.Uri, UriKind.Absolute, out var uri) && uri.Scheme == Hosting.HypervisorConnector.SimulatedScheme))
        {
            errors.Add($"{P}:Vms seeds a simulated host only: {OrchestratorSettings.Section}:Host:Uri is '{host.Uri}', not simulated://NAME");
        }

        if (simulated.DiskSizeBytes is < 1L << 20 or > 1L << 44)
        {
            errors.Add($"{P}:DiskSizeBytes: {simulated.DiskSizeBytes} is not between 1048576 (1 MiB) and 17592186044416 (16 TiB)");
        }

        if (simulated.CopyBytesPerSecond < 0)
        {
            errors.Add($"{P}:CopyBytesPerSecond: {simulated.CopyBytesPerSecond} is negative (0 copies instantly)");
        }

        if (IsSet(simulated.ImageFiles))
        {
            if (!Path.IsPathFullyQualified(simulated.ImageFiles))
            {
                errors.Add($"{P}:ImageFiles: '{simulated.ImageFiles}' is not an absolute directory path");
            }
            else if (!(System.Uri.TryCreate(host.Uri, UriKind.Absolute, out var uri) && uri.Scheme == Hosting.HypervisorConnector.SimulatedScheme))
            {
                errors.Add($"{P}:ImageFiles writes a simulated host's images only: {OrchestratorSettings.Section}:Host:Uri is '{host.Uri}', not simulated://NAME");
            }
        }
    }

    private static bool IsSet(string? value) => !string.IsNullOrWhiteSpace(value);

    private static void CheckPort(List<string> errors, string name, int port)
    {
        if (port is < 1 or > 65535)
        {
            errors.Add($"{name}: {port} is not a TCP port (1-65535)");
        }
    }
}
