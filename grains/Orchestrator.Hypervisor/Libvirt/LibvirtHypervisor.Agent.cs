using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Xml.Linq;
using Orchestrator.Hypervisor.Libvirt.Native;

namespace Orchestrator.Hypervisor.Libvirt;

/// <summary>The QEMU guest agent through libvirt (virDomainQemuAgentCommand) and the serial console's log file.</summary>
public sealed partial class LibvirtHypervisor
{
    /// <summary>Output kept from a guest command (the agent returns it base64-encoded).</summary>
    private const int MaxGuestOutputBytes = 64 * 1024;

    public async Task PingGuestAgentAsync(string domain, TimeSpan timeout, CancellationToken cancellationToken = default) =>
        await AgentCommandAsync(domain, """{"execute":"guest-ping"}""", timeout, cancellationToken).ConfigureAwait(false);

    public async Task<GuestCommandResult> RunGuestCommandAsync(string domain, string path, IReadOnlyList<string> arguments, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(arguments);
        var deadline = Stopwatch.StartNew();
        var exec = new JsonObject
        {
            ["execute"] = "guest-exec",
            ["arguments"] = new JsonObject
            {
                ["path"] = path,
                ["arg"] = new JsonArray([.. arguments.Select(a => (JsonNode?)JsonValue.Create(a))]),
                ["capture-output"] = true,
            },
        };
        var started = await AgentCommandAsync(domain, exec.ToJsonString(), Remaining(deadline, timeout, domain), cancellationToken).ConfigureAwait(false);
        var pid = started["pid"]?.GetValue<long>() ?? throw new HypervisorException(HypervisorErrorKind.OperationFailed, $"guest-exec in {domain} returned no pid");
        var status = new JsonObject { ["execute"] = "guest-exec-status", ["arguments"] = new JsonObject { ["pid"] = pid } }.ToJsonString();
        var pause = TimeSpan.FromMilliseconds(50);
        while (true)
        {
            var reply = await AgentCommandAsync(domain, status, Remaining(deadline, timeout, domain), cancellationToken).ConfigureAwait(false);
            if (reply["exited"]?.GetValue<bool>() == true)
            {
                var code = reply["exitcode"]?.GetValue<int>() ?? (reply["signal"] is { } signal ? 128 + signal.GetValue<int>() : -1);
                return new GuestCommandResult(code, Decode(reply["out-data"]) + Decode(reply["err-data"]));
            }

            await Task.Delay(Min(pause, Remaining(deadline, timeout, domain)), cancellationToken).ConfigureAwait(false);
            pause = Min(pause * 2, TimeSpan.FromSeconds(1));
        }
    }

    public async Task<string?> ReadConsoleAsync(string domain, int maxBytes, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxBytes);
        var xml = XElement.Parse(await GetDomainXmlAsync(domain, false, cancellationToken).ConfigureAwait(false));
        var path = xml.Element("devices")?.Elements("serial")
            .Where(s => (string?)s.Attribute("type") == "file")
            .Select(s => (string?)s.Element("source")?.Attribute("path"))
            .FirstOrDefault(p => p is not null);
        if (path is null || !Path.IsPathFullyQualified(path))
        {
            return null;
        }

        var file = new FileInfo(path);
        if (!file.Exists || file.LinkTarget is not null)
        {
            return file.Exists ? null : string.Empty;
        }

        await using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        var start = Math.Max(0, stream.Length - maxBytes);
        stream.Position = start;
        var buffer = new byte[stream.Length - start];
        var read = await stream.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false, cancellationToken).ConfigureAwait(false);
        return System.Text.Encoding.UTF8.GetString(buffer, 0, read);
    }

    /// <summary>One agent command; its "return" member, or the agent's error as <see cref="HypervisorErrorKind.AgentUnavailable"/>.</summary>
    private async Task<JsonNode> AgentCommandAsync(string domain, string command, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var seconds = (int)Math.Clamp(Math.Ceiling(timeout.TotalSeconds), 1, Math.Max(1, CallTimeout.TotalSeconds - 1));
        var reply = await RunAsync(
            () =>
            {
                using var dom = Lookup(domain);
                return LibvirtNative.TakeString(LibvirtQemuNative.virDomainQemuAgentCommand(dom, command, seconds, 0))
                    ?? throw LibvirtErrors.Last($"virDomainQemuAgentCommand({domain})", static code => code switch
                    {
                        VirErrorCode.AgentUnresponsive or VirErrorCode.AgentUnsynced or VirErrorCode.ArgumentUnsupported
                            or VirErrorCode.OperationUnsupported or VirErrorCode.NoSupport or VirErrorCode.OperationTimeout => HypervisorErrorKind.AgentUnavailable,
                        _ => null,
                    });
            },
            cancellationToken).ConfigureAwait(false);
        try
        {
            var node = JsonNode.Parse(reply);
            return node?["return"] ?? throw new HypervisorException(HypervisorErrorKind.AgentUnavailable, $"the guest agent of {domain} answered without a result: {Truncate(reply)}");
        }
        catch (JsonException e)
        {
            throw new HypervisorException(HypervisorErrorKind.AgentUnavailable, $"the guest agent of {domain} answered something that is not JSON: {Truncate(reply)}", inner: e);
        }
    }

    private static TimeSpan Remaining(Stopwatch deadline, TimeSpan timeout, string domain)
    {
        var left = timeout - deadline.Elapsed;
        return left > TimeSpan.Zero ? left : throw new HypervisorException(HypervisorErrorKind.Timeout, $"the guest command in {domain} did not exit within {timeout.TotalSeconds:0.#} s");
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    private static string Decode(JsonNode? base64)
    {
        if (base64?.GetValue<string>() is not { Length: > 0 } text)
        {
            return string.Empty;
        }

        var bytes = Convert.FromBase64String(text.Length > MaxGuestOutputBytes * 2 ? text[..(MaxGuestOutputBytes * 4 / 3 / 4 * 4)] : text);
        return System.Text.Encoding.UTF8.GetString(bytes, 0, Math.Min(bytes.Length, MaxGuestOutputBytes));
    }

    private static string Truncate(string text) => text.Length > 200 ? text[..200] + "..." : text;
}
