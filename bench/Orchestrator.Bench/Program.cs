using Orchestrator.Bench;

// Benchmarks (not tests). Usage:
//   dotnet run -c Release --project bench/Orchestrator.Bench -- driver [--rounds 5] [--host NAME] [--keep]
//   dotnet run -c Release --project bench/Orchestrator.Bench -- driver --uri URI --domain DOM   (an existing guest)
//   dotnet run -c Release --project bench/Orchestrator.Bench -- copy [--rounds 5]
if (args.Length == 0 || args[0] is "-h" or "--help")
{
    Console.WriteLine("usage: Orchestrator.Bench driver [--rounds N] [--host NAME] [--keep] [--uri URI --domain DOM] | copy [--rounds N]");
    return 2;
}

return args[0] switch
{
    "driver" => await DriverBenchmark.RunAsync(BenchOptions.Parse(args[1..])),
    "copy" => await CopyBenchmark.RunAsync(BenchOptions.Parse(args[1..])),
    _ => Usage(args[0]),
};

static int Usage(string mode)
{
    Console.Error.WriteLine($"unknown mode '{mode}'; modes: driver, copy");
    return 2;
}
