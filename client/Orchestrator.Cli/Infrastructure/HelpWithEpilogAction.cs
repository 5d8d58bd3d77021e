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
        text.AppendLine("Environment (options win over variables):");
        (string Name, string Meaning)[] variables =
        [
            (GlobalOptions.EndpointVariable, $"default for --endpoint (else {GlobalOptions.DefaultEndpoint})"),
            (GlobalOptions.TokenVariable, $"bearer token, when neither {GlobalOptions.TokenOptionName} nor {GlobalOptions.TokenFileOptionName} is given"),
            (GlobalOptions.TokenFileVariable, "file holding the bearer token, when no other token is given"),
            (GlobalOptions.CaCertVariable, $"default for {GlobalOptions.CaCertOptionName} (https:// endpoints)"),
            (GlobalOptions.ClientCertVariable, $"default for {GlobalOptions.ClientCertOptionName} (https:// endpoints)"),
            (GlobalOptions.ClientKeyVariable, $"default for {GlobalOptions.ClientKeyOptionName}"),
            ("NO_COLOR", "plain tables even on a terminal"),
        ];
        int width = variables.Max(v => v.Name.Length);
        foreach ((string name, string meaning) in variables)
        {
            text.AppendLine($"  {name.PadRight(width)}  {meaning}");
        }
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
