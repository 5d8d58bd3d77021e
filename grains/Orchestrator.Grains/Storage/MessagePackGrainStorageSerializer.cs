using MessagePack;
using MessagePack.Resolvers;
using Orleans.Storage;

namespace Orchestrator.Grains.Storage;

/// <summary>
/// Grain state as MessagePack: compact, and versioned by explicit integer keys on every state type
/// (<c>[MessagePackObject]</c> + <c>[Key(n)]</c>): new fields take new keys, old keys are never reused.
/// </summary>
public sealed class MessagePackGrainStorageSerializer : IGrainStorageSerializer
{
    private static readonly MessagePackSerializerOptions Options = MessagePackSerializerOptions.Standard
        .WithResolver(StandardResolver.Instance)
        .WithSecurity(MessagePackSecurity.UntrustedData)
        .WithCompression(MessagePackCompression.None);

    public BinaryData Serialize<T>(T? input) => new(MessagePackSerializer.Serialize(input, Options));

    /// <summary>
    /// A row that cannot be read fails only the grain that owns it, with an error that says so (the caller of that
    /// grain gets it; every other grain is unaffected). The bytes themselves are never echoed.
    /// </summary>
    public T Deserialize<T>(BinaryData input)
    {
        try
        {
            return MessagePackSerializer.Deserialize<T>(input.ToMemory(), Options);
        }
        catch (MessagePackSerializationException e)
        {
            var detail = e.InnerException?.Message ?? e.Message;
            throw new OrchestratorException(
                ErrorCode.Internal,
                $"stored {typeof(T).Name} cannot be read ({input.Length} bytes; a damaged row or one written by an incompatible version): "
                + (detail.Length > 200 ? detail[..200] + "..." : detail),
                reason: "STATE_UNREADABLE");
        }
    }
}
