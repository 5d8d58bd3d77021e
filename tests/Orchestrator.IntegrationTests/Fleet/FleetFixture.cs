using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Orchestrator.IntegrationTests.Infrastructure;
using Orchestrator.IntegrationTests.Telemetry;

namespace Orchestrator.IntegrationTests.Fleet;

/// <summary>A lab guest of the fleet: <see cref="Host"/>/<see cref="Name"/>, labelled suite=fleet and tier=<see cref="Tier"/>.</summary>
public sealed record FleetGuest(string Host, string Name, string Tier)
{
    public string Key => $"{Host}/{Name}";

    public override string ToString() => Key;
}

/// <summary>
/// A real multi-host cluster for the fleet tests: one private PostgreSQL, three libvirt lab hosts (fa, fb, fc: each
/// libvirtd in its own mount namespace) with four labelled counter guests (two on fa, one each on fb and fc), and three
/// silo processes in Cluster mode, each serving one host, exporting traces to an in-process OTLP receiver. The CLI
/// talks to fa's silo (<see cref="Entry"/>). Everything is stopped and removed on dispose, also when start-up fails.
/// </summary>
public sealed class FleetFixture : IAsyncLifetime
{
    public static readonly string[] HostNames = ["fa", "fb", "fc"];

    public static readonly FleetGuest[] Guests =
    [
        new("fa", "web-1", "web"),
        new("fa", "web-2", "web"),
        new("fb", "db-1", "db"),
        new("fc", "app-1", "app"),
    ];

    /// <summary>Every guest carries suite=fleet, so a selector on it picks all four.</summary>
    public const string SuiteLabel = "suite";

    public const string SuiteValue = "fleet";

    /// <summary>The guests write a record every 100 ms: four TCG guests and three silos share two cores.</summary>
    public const int GuestIntervalMs = 100;

    /// <summary>Random data written into each guest's disk beyond its counter ring, so a bandwidth-limited copy takes seconds.</summary>
    public const int PreloadMiB = 3;

    private readonly string _work = Path.Combine(Path.GetTempPath(), $"orchestrator-fleet-{Guid.NewGuid():N}");
    private readonly Dictionary<string, LabHost> _labs = HostNames.ToDictionary(h => h, h => new LabHost(h));
    private readonly Dictionary<string, SiloProcess> _silos = [];
    private Task<FirstPolicyRun>? _firstRun;
    private bool _disposed;

    public PostgresFixture Postgres { get; } = new();

    public OtlpTraceReceiver Otlp { get; private set; } = null!;

    public IReadOnlyDictionary<string, LabHost> Labs => _labs;

    public IReadOnlyDictionary<string, SiloProcess> Silos => _silos;

    /// <summary>The silo the CLI talks to (fa's); tests never kill it.</summary>
    public SiloProcess Entry => _silos["fa"];

    public string ClusterId { get; } = $"fleet-{Guid.NewGuid():N}"[..16];

    /// <summary>How long start-up took (PostgreSQL, hosts, guests, silos ready, inventory synced).</summary>
    public TimeSpan StartupTime { get; private set; }

    /// <summary>Scratch space of this fixture (silo working dirs, backups, policy files), deleted on dispose.</summary>
    public string WorkDir => _work;

    /// <summary>
    /// The backup root every silo is configured with (Orchestrator:Backup:Roots), the same path on every host as
    /// /var/backups/vms would be on real ones. A policy's target template is checked against the roots of the silo it
    /// is applied through, with its placeholders filled in, so a {host} template needs a root that holds every host's
    /// directory.
    /// </summary>
    public string BackupRoot => Path.Combine(_work, "backups");

    /// <summary>A host's own directory under the root: its silo's default target, and where {host} templates put its backups.</summary>
    public string HostBackupDir(string host) => Path.Combine(BackupRoot, host);

    /// <summary>The policy target template of the fleet tests: ROOT/{host}/{policy} (a run writes ROOT/HOST/POLICY/VM/RUN/).</summary>
    public string TargetTemplate => Path.Combine(BackupRoot, "{host}", "{policy}");

    public static IEnumerable<FleetGuest> GuestsOn(string host) => Guests.Where(g => g.Host == host);

    public async Task InitializeAsync()
    {
        var sw = Stopwatch.StartNew();
        try
        {
            Otlp = await OtlpTraceReceiver.StartAsync();
            await Task.WhenAll([Postgres.InitializeAsync(), .. _labs.Values.Select(l => l.InitializeAsync())]);
            await Task.WhenAll(Guests.Select(CreateGuestAsync));
            foreach (var host in HostNames)
            {
                _silos[host] = NewSilo(host);
            }

            foreach (var silo in _silos.Values)
            {
                silo.Start();
            }

            await Task.WhenAll(_silos.Values.Select(s => s.WaitReadyAsync(TimeSpan.FromMinutes(3))));
            var fleet = GrpcClients.Fleet(Entry.GrpcEndpoint);
            await Task.WhenAll(Guests.Select(g => fleet.WaitForVmAsync(g.Key, TimeSpan.FromMinutes(2))));
            await Task.WhenAll(Guests.Select(g => _labs[g.Host].WaitForSeqAsync(g.Name, 1)));
            StartupTime = sw.Elapsed;
        }
        catch
        {
            await DisposeAsync();
            throw;
        }
    }

    public async Task DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        List<Exception> errors = [];
        async Task Try(Func<Task> step)
        {
            try
            {
                await step();
            }
            catch (Exception e)
            {
                lock (errors)
                {
                    errors.Add(e);
                }
            }
        }

        // Silos first (they hold libvirt connections), then the hosts (their guests die with them), then the database.
        await Task.WhenAll(_silos.Values.Select(s => Try(async () => await s.DisposeAsync())));
        await Task.WhenAll(_labs.Values.Select(l => Try(l.DisposeAsync)));
        await Try(Postgres.DisposeAsync);
        if (Otlp is not null)
        {
            await Try(async () => await Otlp.DisposeAsync());
        }

        await Try(() =>
        {
            if (Directory.Exists(_work))
            {
                Directory.Delete(_work, recursive: true);
            }

            return Task.CompletedTask;
        });
        if (errors.Count > 0)
        {
            throw new AggregateException("fleet fixture clean-up", errors);
        }
    }

    /// <summary>The fleet's first policy run (<see cref="FirstPolicyRun"/>), done once by the first test that asks.</summary>
    public Task<FirstPolicyRun> FirstRunAsync()
    {
        lock (_silos)
        {
            return _firstRun ??= FirstPolicyRun.ExecuteAsync(this);
        }
    }

    /// <summary>Writes a policy file under the work dir; returns its path.</summary>
    public string WritePolicyFile(string name, string text)
    {
        var dir = Path.Combine(_work, "policies");
        Directory.CreateDirectory(dir);
        var path = Path.Combine(dir, name + ".yaml");
        File.WriteAllText(path, text);
        return path;
    }

    /// <summary>The real `orchestrator` CLI against fa's silo.</summary>
    public Task<ProcessResult> CliAsync(params string[] args) => CliAsync(TimeSpan.FromMinutes(5), args);

    public Task<ProcessResult> CliAsync(TimeSpan timeout, params string[] args) =>
        ProcessRunner.RunAsync("dotnet", [Repo.CliDll, .. args, "--endpoint", Entry.GrpcEndpoint], timeout: timeout);

    /// <summary>Runs the CLI with --format json, asserts exit 0 and parses stdout.</summary>
    public async Task<JsonElement> CliJsonAsync(params string[] args)
    {
        var result = await CliAsync([.. args, "--format", "json"]);
        Assert.True(result.ExitCode == 0, $"orchestrator {string.Join(' ', args)}: {ProcessRunner.Describe(result)}\n{SiloLogs()}");
        using var json = JsonDocument.Parse(result.StandardOutput);
        return json.RootElement.Clone();
    }

    /// <summary>The last lines of every silo's log, for assertion messages.</summary>
    public string SiloLogs(int lines = 40) => string.Join(
        "\n",
        _silos.Select(s => $"--- silo {s.Key} ({(s.Value.HasExited ? $"exited {s.Value.ExitCode}" : "running")}):\n" +
            string.Join('\n', s.Value.Log.Split('\n').TakeLast(lines))));

    private SiloProcess NewSilo(string host)
    {
        Directory.CreateDirectory(HostBackupDir(host));
        var settings = new Dictionary<string, string>
        {
            ["Orchestrator__Persistence__Mode"] = "Cluster",
            ["Orchestrator__Persistence__PostgresConnectionString"] = Postgres.ConnectionString,
            ["Orchestrator__Cluster__ClusterId"] = ClusterId,
            ["Orchestrator__Cluster__ServiceId"] = ClusterId,
            ["Orchestrator__Host__Uri"] = _labs[host].Uri,
            ["Orchestrator__Host__SeedDemo"] = "false",
            ["Orchestrator__Backup__Roots__0"] = BackupRoot,
            ["Orchestrator__Backup__DefaultTarget"] = HostBackupDir(host),
            ["Orchestrator__Backup__ReconcileInterval"] = "00:00:05",
            ["Orchestrator__Policies__RetryInterval"] = "00:00:05",
            // The orchestrator's own log lines (policy runs, targets, backups) in SiloLogs() when a test fails.
            ["Logging__LogLevel__Orchestrator"] = "Information",
        };
        foreach (var (key, value) in Otlp.ExporterEnvironment)
        {
            settings[key] = value;
        }

        return new SiloProcess(host, Path.Combine(_work, host), settings);
    }

    /// <summary>Defines the guest with its labels, writes random data past its counter ring (a raw disk), then starts it.</summary>
    private async Task CreateGuestAsync(FleetGuest guest)
    {
        var lab = _labs[guest.Host];
        var labels = new Dictionary<string, string> { [SuiteLabel] = SuiteValue, ["tier"] = guest.Tier };
        await lab.CreateVmAsync(guest.Name, "raw:32M", GuestIntervalMs, start: false, labels: labels);
        var dd = await ProcessRunner.RunAsync("dd", ["if=/dev/urandom", $"of={lab.DiskPath(guest.Name, "vda", "raw")}", "bs=1M", $"count={PreloadMiB.ToString(CultureInfo.InvariantCulture)}", "seek=4", "conv=notrunc"]);
        Assert.True(dd.ExitCode == 0, ProcessRunner.Describe(dd));
        await lab.StartVmAsync(guest.Name);
    }
}

/// <summary>
/// The fleet tests share one cluster and run alone (not in parallel with other collections): three silos, four TCG
/// guests and PostgreSQL already fill two cores.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class FleetCollection : ICollectionFixture<FleetFixture>
{
    public const string Name = "fleet";
}
