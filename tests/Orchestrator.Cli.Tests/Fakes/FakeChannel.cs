using Grpc.Core;

namespace Orchestrator.Cli.Tests.Fakes;

internal sealed class FakeChannel(CallInvoker invoker, Uri endpoint) : ChannelBase(endpoint.ToString())
{
    public override CallInvoker CreateCallInvoker() => invoker;
}
