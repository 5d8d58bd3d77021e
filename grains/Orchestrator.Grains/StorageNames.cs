namespace Orchestrator.Grains;

/// <summary>Names of the grain storage providers the silo registers.</summary>
public static class StorageNames
{
    public const string Default = "orchestrator";
}
