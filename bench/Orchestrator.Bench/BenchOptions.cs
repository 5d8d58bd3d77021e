using System.Globalization;

namespace Orchestrator.Bench;

internal sealed record BenchOptions(int Rounds, string Host, bool Keep, string? Uri, string? Domain)
{
    public static BenchOptions Parse(string[] args)
    {
        var options = new BenchOptions(5, "bench", false, null, null);
        for (var i = 0; i < args.Length; i++)
        {
            options = args[i] switch
            {
                "--rounds" => options with { Rounds = int.Parse(args[++i], CultureInfo.InvariantCulture) },
                "--host" => options with { Host = args[++i] },
                "--keep" => options with { Keep = true },
                "--uri" => options with { Uri = args[++i] },
                "--domain" => options with { Domain = args[++i] },
                _ => throw new ArgumentException($"unknown option {args[i]}"),
            };
        }

        if ((options.Uri is null) != (options.Domain is null))
        {
            throw new ArgumentException("--uri and --domain go together");
        }

        return options;
    }
}
