using System.CommandLine;
using System.CommandLine.Invocation;
using System.CommandLine.Parsing;
using Orchestrator.Cli.Commands;
using Orchestrator.Cli.Errors;
using Orchestrator.Cli.Infrastructure;

namespace Orchestrator.Cli;

/// <summary>
/// The <c>orchestrator</c> command, callable in-process: parses <c>args</c>, runs the command against the
/// gRPC endpoint and returns the exit code (see <see cref="ExitCodes"/>). Results go to <c>stdout</c>,
/// errors and warnings to <c>stderr</c>.
/// </summary>
public static class CliApp
{
    public const string CommandName = "orchestrator";

    public static Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken ct = default) =>
        RunAsync(args, stdout, stderr, CliEnvironment.ForProcess(stdout), ct);

    internal static async Task<int> RunAsync(
        string[] args, TextWriter stdout, TextWriter stderr, CliEnvironment environment, CancellationToken ct = default)
    {
        try
        {
            RootCommand root = BuildRootCommand(environment);
            // No response files: "@hourly" is a cron macro, not a file of arguments.
            ParseResult parseResult = root.Parse(args, new ParserConfiguration { ResponseFileTokenReplacer = null });
            if (parseResult.Action is ParseErrorAction)
            {
                // Our own report instead of the library's: "error:" lines and exit code 2, nothing on stdout.
                foreach (ParseError error in parseResult.Errors)
                {
                    stderr.WriteLine($"error: {OneLine(error.Message)}");
                }

                stderr.WriteLine($"Run '{CommandPath(parseResult)} --help' for usage.");
                return ExitCodes.Usage;
            }

            var configuration = new InvocationConfiguration { Output = stdout, Error = stderr };
            return await parseResult.InvokeAsync(configuration, ct);
        }
        catch (Exception exception)
        {
            // Commands report their own failures; this is the last resort for a defect in parsing or help.
            new CliError(ExitCodes.Internal, $"unexpected {exception.GetType().Name}: {exception.Message}").WriteTo(stderr);
            return ExitCodes.Internal;
        }
    }

    /// <summary>
    /// The command tree. A new noun is one <c>Commands/{Noun}Commands.cs</c> with a <c>Create(CliRuntime)</c>
    /// method, listed here.
    /// </summary>
    internal static RootCommand BuildRootCommand(CliEnvironment environment)
    {
        var globals = new GlobalOptions();
        var runtime = new CliRuntime(globals, environment);
        var root = new RootCommand("Query and drive the Orchestrator backup cluster over gRPC.");
        foreach (Option option in globals.All)
        {
            root.Options.Add(option);
        }

        root.Subcommands.Add(HostCommands.Create(runtime));
        root.Subcommands.Add(VmCommands.Create(runtime));
        root.Subcommands.Add(ChainCommands.Create(runtime));
        root.Subcommands.Add(CheckpointCommands.Create(runtime));
        root.Subcommands.Add(BackupCommands.Create(runtime));
        root.Subcommands.Add(RestoreCommands.Create(runtime));
        root.Subcommands.Add(PolicyCommands.Create(runtime));
        root.Subcommands.Add(FleetCommands.Create(runtime));
        HelpWithEpilogAction.Attach(root);
        return root;
    }

    /// <summary>Some library messages span lines ("Must be one of:\n\t'table'..."); keep one "error:" line each.</summary>
    private static string OneLine(string message) =>
        string.Join(' ', message.Split(['\r', '\n', '\t'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));

    private static string CommandPath(ParseResult parseResult)
    {
        var names = new Stack<string>();
        for (SymbolResult? result = parseResult.CommandResult; result is CommandResult command; result = command.Parent)
        {
            if (command.Command is not RootCommand)
            {
                names.Push(command.Command.Name);
            }
        }

        return string.Join(' ', names.Prepend(CommandName));
    }
}
