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

    public T Deserialize<T>(BinaryData input) => MessagePackSerializer.Deserialize<T>(input.ToMemory(), Options);
}
