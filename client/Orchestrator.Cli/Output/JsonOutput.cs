using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace Orchestrator.Cli.Output;

/// <summary>
/// JSON for scripts: exactly one document on stdout, written with the source-generated
/// <see cref="CliJsonContext"/> (snake_case keys, every field always present, null when unset). Streams
/// (<c>backup watch</c>) write one compact document per line with <see cref="CliJsonContext.Compact"/>.
/// </summary>
internal static class JsonOutput
{
    public static void Write<T>(TextWriter writer, T value, JsonTypeInfo<T> typeInfo)
    {
        writer.WriteLine(JsonSerializer.Serialize(value, typeInfo));
        writer.Flush();
    }
}
