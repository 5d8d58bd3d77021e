using Microsoft.Extensions.Logging;

namespace Orchestrator.Hypervisor.QemuImg;

public sealed partial class QemuImgDiskImages
{
    private static partial class Log
    {
        [LoggerMessage(EventId = 1100, Level = LogLevel.Information, Message = "Created image {Path} ({Format}, {VirtualSize} bytes)")]
        public static partial void Created(ILogger logger, string path, string format, long virtualSize);

        [LoggerMessage(EventId = 1101, Level = LogLevel.Information, Message = "Copied {Source} to {Destination} (sparse copy): {Bytes} bytes in {ElapsedMs:F0} ms")]
        public static partial void Copied(ILogger logger, string source, string destination, long bytes, double elapsedMs);

        [LoggerMessage(EventId = 1104, Level = LogLevel.Information, Message = "Converted {Source} ({SourceFormat}) to {Destination} ({TargetFormat}): {Bytes} bytes in {ElapsedMs:F0} ms")]
        public static partial void Converted(ILogger logger, string source, string sourceFormat, string destination, string targetFormat, long bytes, double elapsedMs);

        [LoggerMessage(EventId = 1102, Level = LogLevel.Information, Message = "Committed {Overlay} into its backing file")]
        public static partial void Committed(ILogger logger, string overlay);

        [LoggerMessage(EventId = 1103, Level = LogLevel.Information, Message = "Deleted {Path}")]
        public static partial void Deleted(ILogger logger, string path);
    }
}
