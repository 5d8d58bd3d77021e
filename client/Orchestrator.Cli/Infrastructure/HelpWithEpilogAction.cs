using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;

namespace Orchestrator.Cli.Infrastructure;

/// <summary>The standard help, followed by the environment variables and the exit codes.</summary>
internal sealed class HelpWithEpilogAction(HelpAction inner) : SynchronousCommandLineAction
{
    public override bool ClearsParseErrors => true;

    public static string Epilog { get; } = BuildEpilog();

    /// <summary>Replaces the help action of every help option on <paramref name="root"/> (it is recursive).</summary>
    public static void Attach(RootCommand root)
    {
        foreach (HelpOption option in root.Options.OfType<HelpOption>())
        {
            if (option.Action is HelpAction help)
            {
                option.Action = new HelpWithEpilogAction(help);
            }
        }
    }

    public override int Invoke(ParseResult parseResult)
    {
        int result = inner.Invoke(parseResult);
        parseResult.InvocationConfiguration.Output.Write(Epilog);
        return result;
    }

    private static string BuildEpilog()
    {
        var text = new System.Text.StringBuilder();
        text.AppendLine("Environment:");
        text.AppendLine($"  {GlobalOptions.EndpointVariable}  default for --endpoint (else {GlobalOptions.DefaultEndpoint})");
        text.AppendLine("  NO_COLOR               plain tables even on a terminal");
        text.AppendLine();
        text.AppendLine("Exit codes:");
        foreach ((int code, string meaning) in ExitCodes.All)
        {
            text.AppendLine($"  {code,3}  {meaning}");
        }

        text.AppendLine();
        return text.ToString();
    }
}
