using System.Diagnostics;
using System.Text;

namespace Orchestrator.IntegrationTests.Infrastructure;

/// <summary>
/// A real silo process (the built Orchestrator.Silo), configured through environment variables, on free ports.
/// Killed with SIGKILL on request, restarted with the same settings.
/// </summary>
public sealed class SiloProcess : IAsyncDisposable
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(5) };
    private readonly Dictionary<string, string> _environment;
    private readonly StringBuilder _log = new();
    private readonly StringBuilder _errors = new();
    private Process? _process;

    public SiloProcess(string host, string workDir, IDictionary<string, string>? settings = null)
    {
        Host = host;
        WorkDir = workDir;
        GrpcPort = Repo.FreePort();
        HttpPort = Repo.FreePort();
        SiloPort = Repo.FreePort();
        Directory.CreateDirectory(workDir);
        _environment = new Dictionary<string, string>
        {
            ["Orchestrator__Host__Name"] = host,
            ["Orchestrator__Host__Uri"] = $"simulated://{host}",
            ["Orchestrator__Host__SeedDemo"] = "true",
            ["Orchestrator__Persistence__SqlitePath"] = Path.Combine(workDir, "orchestrator.db"),
            ["Orchestrator__Cluster__SiloPort"] = SiloPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["Orchestrator__Endpoints__GrpcPort"] = GrpcPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["Orchestrator__Endpoints__HttpPort"] = HttpPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["Orchestrator__Endpoints__Dashboard"] = "false",
            ["Logging__LogLevel__Default"] = "Warning",
        };
        foreach (var (key, value) in settings ?? new Dictionary<string, string>())
        {
            _environment[key] = value;
        }
    }

    public string Host { get; }

    public string WorkDir { get; }

    public int GrpcPort { get; }

    public int HttpPort { get; }

    /// <summary>The Orleans silo-to-silo port (unless a setting given to the constructor overrides it).</summary>
    public int SiloPort { get; }

    /// <summary>The process id of the running silo (the dotnet process itself).</summary>
    public int Pid => _process?.Id ?? throw new InvalidOperationException("not started");

    /// <summary>What the silo wrote to standard error alone (also part of <see cref="Log"/>).</summary>
    public string ErrorOutput
    {
        get
        {
            lock (_log)
            {
                return _errors.ToString();
            }
        }
    }

    public string GrpcEndpoint => $"http://127.0.0.1:{GrpcPort}";

    public string Log
    {
        get
        {
            lock (_log)
            {
                return _log.ToString();
            }
        }
    }

    public bool HasExited => _process is null || _process.HasExited;

    /// <summary>Changes a setting for the next <see cref="Start"/> (null removes it); ports stay the same.</summary>
    public void Set(string key, string? value)
    {
        if (value is null)
        {
            _environment.Remove(key);
        }
        else
        {
            _environment[key] = value;
        }
    }

    public int? ExitCode => _process is { HasExited: true } p ? p.ExitCode : null;

    public void Start()
    {
        var info = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = WorkDir,
        };
        info.ArgumentList.Add(Repo.SiloDll);
        foreach (var (key, value) in _environment)
        {
            info.Environment[key] = value;
        }

        _process = Process.Start(info)!;
        _process.OutputDataReceived += (_, e) => Append(e.Data);
        _process.ErrorDataReceived += (_, e) => Append(e.Data, error: true);
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    /// <summary>Waits until /health/ready answers Healthy and the host's inventory has been synced once.</summary>
    public async Task WaitReadyAsync(TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(90));
        while (DateTime.UtcNow < deadline)
        {
            if (HasExited)
            {
                throw new InvalidOperationException($"silo {Host} exited with {ExitCode}:\n{Log}");
            }

            try
            {
                var ready = await Http.GetStringAsync($"http://127.0.0.1:{HttpPort}/health/ready");
                if (ready == "Healthy")
                {
                    return;
                }
            }
            catch (HttpRequestException)
            {
            }
            catch (TaskCanceledException)
            {
            }

            await Task.Delay(200);
        }

        throw new TimeoutException($"silo {Host} not ready in time:\n{Log}");
    }

    /// <summary>SIGKILL: no graceful shutdown, nothing flushed.</summary>
    public async Task KillAsync()
    {
        if (_process is { HasExited: false } p)
        {
            p.Kill(entireProcessTree: true);
            await p.WaitForExitAsync();
        }
    }

    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        await _process!.WaitForExitAsync(cts.Token);
        return _process.ExitCode;
    }

    public async ValueTask DisposeAsync()
    {
        await KillAsync();
        _process?.Dispose();
    }

    private void Append(string? line, bool error = false)
    {
        if (line is null)
        {
            return;
        }

        lock (_log)
        {
            _log.AppendLine(line);
            if (error)
            {
                _errors.AppendLine(line);
            }
        }
    }
}
