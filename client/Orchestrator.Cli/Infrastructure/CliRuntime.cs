using System.CommandLine;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Orchestrator.Cli.Errors;

namespace Orchestrator.Cli.Infrastructure;

/// <summary>
/// Shared by all commands: the global options, the environment, and the one place that runs a command
/// body and turns every failure into an <c>error:</c> line and an exit code.
/// </summary>
internal sealed class CliRuntime(GlobalOptions globals, CliEnvironment environment)
{
    public GlobalOptions Globals { get; } = globals;

    public CliEnvironment Environment { get; } = environment;

    /// <summary>Makes <paramref name="body"/> the action of <paramref name="command"/>.</summary>
    public void SetAction(Command command, Func<ParseResult, CommandContext, CancellationToken, Task> body) =>
        command.SetAction((parseResult, cancellationToken) => RunAsync(parseResult, body, cancellationToken));

    private async Task<int> RunAsync(
        ParseResult parseResult, Func<ParseResult, CommandContext, CancellationToken, Task> body, CancellationToken cancellationToken)
    {
        TextWriter stdout = parseResult.InvocationConfiguration.Output;
        TextWriter stderr = parseResult.InvocationConfiguration.Error;
        GlobalSettings? settings = null;
        try
        {
            settings = Globals.Bind(parseResult, Environment);
            ChannelBase channel = Environment.Connect(settings.Connection);
            try
            {
                CallInvoker invoker = channel.CreateCallInvoker();
                if (settings.Token is { } token)
                {
                    if (!settings.Connection.Tls && !settings.Connection.Loopback)
                    {
                        stderr.WriteLine($"warning: the bearer token goes to {settings.Endpoint.Host} in clear text (http://); use https://");
                    }

                    string header = "Bearer " + token.Value;
                    invoker = invoker.Intercept(metadata =>
                    {
                        metadata.Add("authorization", header);
                        return metadata;
                    });
                }

                var context = new CommandContext(
                    settings, invoker, stdout, stderr, Environment.Color, Environment.Interactive, Environment.Clock, Environment.TerminalWidth);
                await body(parseResult, context, cancellationToken);
                return ExitCodes.Ok;
            }
            finally
            {
                await channel.ShutdownAsync();
                (channel as IDisposable)?.Dispose();
            }
        }
        catch (CliException exception)
        {
            return Report(stderr, exception.ToCliError());
        }
        catch (Exception exception) when (cancellationToken.IsCancellationRequested
            && exception is OperationCanceledException or RpcException { StatusCode: StatusCode.Cancelled })
        {
            return Report(stderr, new CliError(ExitCodes.Interrupted, "interrupted"));
        }
        catch (RpcException exception)
        {
            return Report(stderr, RpcErrorMapper.Map(exception, settings!.Connection, settings.Timeout));
        }
        catch (Exception exception)
        {
            return Report(stderr, new CliError(ExitCodes.Internal, $"unexpected {exception.GetType().Name}: {exception.Message}"));
        }
    }

    private static int Report(TextWriter stderr, CliError error)
    {
        error.WriteTo(stderr);
        return error.ExitCode;
    }
}
