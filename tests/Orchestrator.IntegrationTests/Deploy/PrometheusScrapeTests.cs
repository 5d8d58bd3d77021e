using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Orchestrator.IntegrationTests.Infrastructure;

namespace Orchestrator.IntegrationTests.Deploy;

/// <summary>
/// The alert rules and the Grafana dashboard against real series: a silo (SQLite, simulated host with the demo VMs and
/// three more) scraped every second by a real Prometheus (Debian's) with the shipped scrape job and alert rules, while
/// it runs a policy twice (live backups of three VMs), one direct backup, two checkpoints and a refused one.
/// </summary>
public sealed partial class PrometheusScrapeTests
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(15) };

    /// <summary>
    /// Rules written against a metric this test's silo does not emit: orchestrator_backup_tests_total appears with the
    /// first test restore, and this test runs none (TestRestoreLabTests scrapes it after real ones). The test checks
    /// that the metric is indeed absent here and that the rule parses and evaluates.
    /// </summary>
    private static readonly Dictionary<string, string> RulesOfMetricsNotEmittedYet = new()
    {
        ["OrchestratorTestRestoresFailing"] = "orchestrator_backup_tests_total",
    };

    /// <summary>
    /// Dashboard panels that show a situation this single healthy silo does not produce: no target is skipped and no VM
    /// waits for its host unless another host is down (the fleet lab tests make that happen), and the test-restore
    /// series are born with the first test restore, which this test runs none of (TestRestoreLabTests does).
    /// </summary>
    private static readonly Dictionary<string, string> PanelsEmptyOnThisSilo = new()
    {
        ["Targets skipped, by host"] = "a skipped target needs its host's silo down",
        ["Runs in progress and VMs waiting for their host#B"] = "VMs waiting for their host need that host down",
        ["Test restores per hour by outcome"] = "orchestrator_backup_tests_total is born with the first test restore",
        ["Test restore boot time p50 / p95"] = "the boot-time histogram is born with the first passed test restore",
        ["Test restore boot time p50 / p95#B"] = "the boot-time histogram is born with the first passed test restore",
    };

    [Fact]
    public async Task AlertRules_PassPromtoolCheckAndUnitTests()
    {
        var promtool = await OpsTools.RequireAsync("promtool");
        var check = await ProcessRunner.RunAsync(promtool, ["check", "rules", Repo.Script("deploy/grafana/orchestrator-alerts.yml")]);
        Assert.True(check.ExitCode == 0, ProcessRunner.Describe(check));
        Assert.Contains("SUCCESS: 6 rules found", check.StandardOutput, StringComparison.Ordinal);

        var test = await ProcessRunner.RunAsync(promtool, ["test", "rules", Repo.Script("deploy/grafana/orchestrator-alerts.test.yml")]);
        Assert.True(test.ExitCode == 0, ProcessRunner.Describe(test));
        Assert.Contains("SUCCESS", test.StandardOutput, StringComparison.Ordinal);

        var config = await ProcessRunner.RunAsync(promtool, ["check", "config", Repo.Script("deploy/grafana/prometheus.yml")]);
        Assert.True(config.ExitCode == 0, ProcessRunner.Describe(config));
    }

    [Fact]
    public async Task EveryDashboardQueryAndAlertRule_HasDataFromARealSilo()
    {
        var prometheusBinary = await OpsTools.RequireAsync("prometheus");
        var work = Path.Combine(Path.GetTempPath(), $"orchestrator-prometheus-{Guid.NewGuid():N}");
        var backups = Path.Combine(work, "backups");
        Directory.CreateDirectory(backups);
        var silo = new SiloProcess("prom-01", Path.Combine(work, "silo"), new Dictionary<string, string>
        {
            ["Orchestrator__Host__Simulated__Vms"] = "3",
            ["Orchestrator__Host__Simulated__DiskSizeBytes"] = (16 * 1024 * 1024).ToString(CultureInfo.InvariantCulture),
            ["Orchestrator__Backup__Roots__0"] = backups,
            ["Orchestrator__Backup__DefaultTarget"] = Path.Combine(backups, "direct"),
            ["Orchestrator__Policies__ComplianceMetricsInterval"] = "00:00:02",
        });
        Process? prometheus = null;
        var prometheusLog = new StringBuilder();
        try
        {
            silo.Start();
            await silo.WaitReadyAsync();
            await GrpcClients.Fleet(silo.GrpcEndpoint).WaitForVmAsync("prom-01/vm-00003");

            var port = Repo.FreePort();
            var config = ScrapeConfig(silo.HttpPort);
            var configPath = Path.Combine(work, "prometheus.yml");
            await File.WriteAllTextAsync(configPath, config);
            var info = new ProcessStartInfo(prometheusBinary)
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
                WorkingDirectory = work,
            };
            foreach (var a in new[] { $"--config.file={configPath}", $"--storage.tsdb.path={Path.Combine(work, "tsdb")}", $"--web.listen-address=127.0.0.1:{port}" })
            {
                info.ArgumentList.Add(a);
            }

            prometheus = Process.Start(info)!;
            prometheus.OutputDataReceived += (_, e) => { lock (prometheusLog) { prometheusLog.AppendLine(e.Data); } };
            prometheus.ErrorDataReceived += (_, e) => { lock (prometheusLog) { prometheusLog.AppendLine(e.Data); } };
            prometheus.BeginOutputReadLine();
            prometheus.BeginErrorReadLine();
            var api = $"http://127.0.0.1:{port}/api/v1";

            // Scraping before anything happens, then the silo's work, then scraped after it and every rule evaluated.
            await WaitUntilAsync(async () => (await QueryAsync(api, "count_over_time(up{job=\"orchestrator-silo\"}[1m]) >= 3")).Count > 0, TimeSpan.FromSeconds(30), prometheus, prometheusLog);

            // What a silo with a few VMs does, while Prometheus scrapes (a counter or histogram series is born with its first
            // event, and a rate needs it to grow while scraped): two policy runs, a direct backup, two checkpoints, a refused one.
            var policy = Path.Combine(work, "policy.yaml");
            await File.WriteAllTextAsync(policy, $$"""
                name: scrape
                kind: live-backup
                selector:
                  labels:
                    fleet: scale
                schedule:
                  cron: "0 3 * * *"
                  time_zone: UTC
                retention:
                  keep_last: 2
                target: {{backups}}/{host}
                rpo: 1h
                concurrency:
                  per_host: 2
                  fleet: 2
                """);
            await CliAsync(silo, 0, "policy", "apply", "-f", policy);
            await CliAsync(silo, 0, "policy", "run", "scrape", "--watch");
            await CliAsync(silo, 0, "checkpoint", "create", "prom-01/db-1");

            // A histogram whose first observations all fall before its first scrape has a rate of 0 and a NaN quantile:
            // the second run and checkpoint come once Prometheus has scraped the first ones.
            await WaitUntilAsync(async () => (await QueryAsync(api, "sum(orchestrator_checkpoint_pause_milliseconds_count) >= 1 and on() sum(orchestrator_policy_run_duration_seconds_count) >= 1")).Count > 0, TimeSpan.FromSeconds(30), prometheus, prometheusLog);
            await CliAsync(silo, 0, "policy", "run", "scrape", "--watch");
            await CliAsync(silo, 0, "backup", "start", "prom-01/vm-00003", "--wait");
            await CliAsync(silo, 0, "checkpoint", "create", "prom-01/db-1");
            await CliAsync(silo, null, "checkpoint", "create", "prom-01/legacy-1"); // raw disk: refused, counted as a failure
            await CliAsync(silo, 0, "fleet", "compliance");

            await WaitUntilAsync(async () => (await QueryAsync(api, "sum(orchestrator_checkpoints_taken_total) >= 2 and on() sum(orchestrator_policy_runs_total) >= 2 and on() sum(orchestrator_backups_total) >= 7")).Count > 0, TimeSpan.FromSeconds(30), prometheus, prometheusLog);
            await Task.Delay(TimeSpan.FromSeconds(3));
            await WaitUntilAsync(async () => (await RulesAsync(api)).All(r => r.Evaluated), TimeSpan.FromSeconds(20), prometheus, prometheusLog);

            var failures = new List<string>();
            var notes = new List<string>();

            // Every dashboard query, its variables at "All" and the percentile window at 1h.
            foreach (var (panel, expr) in DashboardQueries())
            {
                var query = expr.Replace("$__rate_interval", "1m", StringComparison.Ordinal)
                    .Replace("$window", "1h", StringComparison.Ordinal)
                    .Replace("$host", ".*", StringComparison.Ordinal)
                    .Replace("$policy", ".*", StringComparison.Ordinal)
                    .Replace("$fleet", ".*", StringComparison.Ordinal);
                Assert.DoesNotContain("$", query, StringComparison.Ordinal);
                var (ok, result, error) = await TryQueryAsync(api, query);
                if (!ok)
                {
                    failures.Add($"panel '{panel}': {error}: {query}");
                }
                else if (result.Count == 0 && !PanelsEmptyOnThisSilo.ContainsKey(panel))
                {
                    failures.Add($"panel '{panel}': no data: {query}");
                }
                else if (result.Count > 0 && !result.Any(HasNumber))
                {
                    failures.Add($"panel '{panel}': only NaN: {query}");
                }
                else if (result.Count == 0)
                {
                    notes.Add($"panel '{panel}' empty as expected: {PanelsEmptyOnThisSilo[panel]}");
                }
            }

            // Every alert rule: Prometheus loaded and evaluated it without error, and its expression without the
            // final threshold has data (the rule looks at series that exist), while no alert is pending or firing.
            var rules = await RulesAsync(api);
            Assert.Equal(6, rules.Count);
            foreach (var rule in rules)
            {
                if (rule.Health != "ok")
                {
                    failures.Add($"rule {rule.Name}: health {rule.Health}: {rule.LastError}");
                    continue;
                }

                if (rule.State != "inactive")
                {
                    failures.Add($"rule {rule.Name} is {rule.State} on a healthy silo");
                }

                var match = Threshold().Match(rule.Query);
                if (!match.Success)
                {
                    failures.Add($"rule {rule.Name}: no trailing threshold to strip: {rule.Query}");
                    continue;
                }

                var (ok, result, error) = await TryQueryAsync(api, match.Groups["base"].Value);
                if (RulesOfMetricsNotEmittedYet.TryGetValue(rule.Name, out var metric))
                {
                    var present = await QueryAsync(api, $"count({{__name__=\"{metric}\"}})");
                    Assert.True(present.Count == 0, $"{metric} is emitted now: drop {rule.Name} from RulesOfMetricsNotEmittedYet");
                    Assert.True(ok, $"rule {rule.Name}: {error}");
                    notes.Add($"rule {rule.Name}: {metric} not emitted by this silo (it ran no test restore); the rule parses and evaluates");
                }
                else if (!ok || result.Count == 0)
                {
                    failures.Add($"rule {rule.Name}: {(ok ? "no data" : error)}: {match.Groups["base"].Value}");
                }
            }

            Assert.True(failures.Count == 0, string.Join('\n', failures));
            Console.WriteLine(string.Join('\n', notes));

            // And a rule fires on real series: the silo stops, its scrape fails, OrchestratorSiloDown goes pending.
            await silo.KillAsync();
            await WaitUntilAsync(async () => (await RulesAsync(api)).Any(r => r.Name == "OrchestratorSiloDown" && r.State is "pending" or "firing"), TimeSpan.FromSeconds(20), prometheus, prometheusLog);
        }
        finally
        {
            if (prometheus is { HasExited: false })
            {
                prometheus.Kill(entireProcessTree: true);
                await prometheus.WaitForExitAsync();
            }

            prometheus?.Dispose();
            await silo.DisposeAsync();
            Directory.Delete(work, recursive: true);
        }
    }

    /// <summary>deploy/grafana/prometheus.yml with this silo as the target, a 1 s interval and the rules by absolute path.</summary>
    private static string ScrapeConfig(int httpPort)
    {
        var shipped = File.ReadAllText(Repo.Script("deploy/grafana/prometheus.yml"));
        var config = ReplaceOnce(shipped, TargetsLine(), $"      - targets: [\"127.0.0.1:{httpPort}\"]");
        config = ReplaceOnce(config, ScrapeIntervalLine(), "  scrape_interval: 1s");
        config = ReplaceOnce(config, EvaluationIntervalLine(), "  evaluation_interval: 1s");
        return ReplaceOnce(config, RuleFileLine(), $"  - {Repo.Script("deploy/grafana/orchestrator-alerts.yml")}");
    }

    private static string ReplaceOnce(string text, Regex pattern, string replacement)
    {
        Assert.Single(pattern.Matches(text));
        return pattern.Replace(text, replacement);
    }

    /// <summary>(panel title, expr) of every Prometheus target in the dashboard; a second target of a panel is "title#B".</summary>
    private static List<(string Panel, string Expr)> DashboardQueries()
    {
        var result = new List<(string, string)>();
        foreach (var file in Directory.GetFiles(Repo.Script("deploy/grafana"), "*.json"))
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(file));
            Walk(doc.RootElement);
        }

        Assert.True(result.Count >= 20, $"only {result.Count} dashboard queries found");
        return result;

        void Walk(JsonElement element)
        {
            if (element.ValueKind != JsonValueKind.Object || !element.TryGetProperty("panels", out var panels))
            {
                return;
            }

            foreach (var panel in panels.EnumerateArray())
            {
                if (panel.TryGetProperty("targets", out var targets))
                {
                    var i = 0;
                    foreach (var target in targets.EnumerateArray())
                    {
                        if (target.TryGetProperty("expr", out var expr) && expr.GetString() is { Length: > 0 } text)
                        {
                            var title = panel.GetProperty("title").GetString()!;
                            result.Add((i == 0 ? title : $"{title}#{(char)('A' + i)}", text));
                            i++;
                        }
                    }
                }

                Walk(panel);
            }
        }
    }

    private static async Task CliAsync(SiloProcess silo, int? expectedExit, params string[] args)
    {
        var r = await ProcessRunner.RunAsync("dotnet", [Repo.CliDll, .. args, "--endpoint", silo.GrpcEndpoint], timeout: TimeSpan.FromSeconds(60));
        if (expectedExit is { } exit)
        {
            Assert.True(r.ExitCode == exit, $"orchestrator {string.Join(' ', args)}: {ProcessRunner.Describe(r)}");
        }
        else
        {
            Assert.True(r.ExitCode != 0, $"orchestrator {string.Join(' ', args)} should have been refused: {ProcessRunner.Describe(r)}");
        }
    }

    /// <summary>A vector sample or scalar whose value is a number (a quantile of an empty rate is NaN).</summary>
    private static bool HasNumber(JsonElement sample)
    {
        var value = sample.ValueKind == JsonValueKind.Array ? sample : sample.GetProperty("value");
        return double.TryParse(value[1].GetString(), NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && double.IsFinite(v);
    }

    private static async Task<List<JsonElement>> QueryAsync(string api, string query)
    {
        var (ok, result, error) = await TryQueryAsync(api, query);
        Assert.True(ok, $"{query}: {error}");
        return result;
    }

    private static async Task<(bool Ok, List<JsonElement> Result, string Error)> TryQueryAsync(string api, string query)
    {
        using var response = await Http.GetAsync($"{api}/query?query={Uri.EscapeDataString(query)}");
        var body = await response.Content.ReadAsStringAsync();
        using var doc = JsonDocument.Parse(body);
        var root = doc.RootElement;
        if (root.GetProperty("status").GetString() != "success")
        {
            return (false, [], $"{root.GetProperty("errorType").GetString()}: {root.GetProperty("error").GetString()}");
        }

        var data = root.GetProperty("data");
        var result = data.GetProperty("resultType").GetString() switch
        {
            "vector" or "matrix" => data.GetProperty("result").EnumerateArray().Select(e => e.Clone()).ToList(),
            _ => [data.GetProperty("result").Clone()],
        };
        return (true, result, "");
    }

    private sealed record Rule(string Name, string Query, string Health, string State, string LastError, bool Evaluated);

    private static async Task<List<Rule>> RulesAsync(string api)
    {
        using var doc = JsonDocument.Parse(await Http.GetStringAsync($"{api}/rules"));
        var rules = new List<Rule>();
        foreach (var group in doc.RootElement.GetProperty("data").GetProperty("groups").EnumerateArray())
        {
            foreach (var r in group.GetProperty("rules").EnumerateArray())
            {
                rules.Add(new Rule(
                    r.GetProperty("name").GetString()!,
                    r.GetProperty("query").GetString()!,
                    r.GetProperty("health").GetString()!,
                    r.TryGetProperty("state", out var state) ? state.GetString()! : "",
                    r.TryGetProperty("lastError", out var error) ? error.GetString() ?? "" : "",
                    r.TryGetProperty("lastEvaluation", out var at) && !at.GetString()!.StartsWith("0001", StringComparison.Ordinal)));
            }
        }

        return rules;
    }

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, TimeSpan timeout, Process prometheus, StringBuilder log)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            if (prometheus.HasExited)
            {
                lock (log)
                {
                    throw new InvalidOperationException($"prometheus exited with {prometheus.ExitCode}:\n{log}");
                }
            }

            try
            {
                if (await condition())
                {
                    return;
                }
            }
            catch (Exception e) when (e is HttpRequestException or JsonException or TaskCanceledException)
            {
                // not listening yet, or still starting (a plain-text 503)
            }

            if (DateTime.UtcNow > deadline)
            {
                lock (log)
                {
                    throw new TimeoutException($"not reached within {timeout}; prometheus log:\n{log}");
                }
            }

            await Task.Delay(500);
        }
    }

    [GeneratedRegex(@"^(?<base>.*?)\s*(==|!=|>=|<=|>|<)\s*[0-9.]+\s*$", RegexOptions.Singleline)]
    private static partial Regex Threshold();

    [GeneratedRegex(@"^      - targets: \[.*\]$", RegexOptions.Multiline)]
    private static partial Regex TargetsLine();

    [GeneratedRegex(@"^  scrape_interval: .*$", RegexOptions.Multiline)]
    private static partial Regex ScrapeIntervalLine();

    [GeneratedRegex(@"^  evaluation_interval: .*$", RegexOptions.Multiline)]
    private static partial Regex EvaluationIntervalLine();

    [GeneratedRegex(@"^  - orchestrator-alerts\.yml$", RegexOptions.Multiline)]
    private static partial Regex RuleFileLine();
}
