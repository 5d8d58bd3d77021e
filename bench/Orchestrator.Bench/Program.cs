using Orchestrator.Bench;

// Benchmarks (not tests). The fleet mode's in-process cluster writes its silo logs under ./logs (git-ignored). Usage:
//   dotnet run -c Release --project bench/Orchestrator.Bench -- driver [--rounds 5] [--host NAME] [--keep]
//   dotnet run -c Release --project bench/Orchestrator.Bench -- driver --uri URI --domain DOM   (an existing guest)
//   dotnet run -c Release --project bench/Orchestrator.Bench -- copy [--rounds 5]
//   dotnet run -c Release --project bench/Orchestrator.Bench -- backup [--rounds 5] [--host NAME] [--keep]   (builds and starts a silo)
//   dotnet run -c Release --project bench/Orchestrator.Bench -- checkpoint [--rounds 5] [--host NAME] [--keep]   (starts a silo too)
//   dotnet run -c Release --project bench/Orchestrator.Bench -- incremental [--rounds 5] [--host NAME] [--keep]   (a silo and virtnbdbackup)
//   dotnet run -c Release --project bench/Orchestrator.Bench -- fleet [--rounds 3] [--hosts 4] [--vms-per-host 25] [--per-host 2] [--fleet 8]   (simulated hosts)
//   dotnet bench/Orchestrator.Bench/bin/Release/net10.0/Orchestrator.Bench.dll fleet-scale --vms N [--silos 3] [--rounds 1] [--copy-bytes-per-second B]
//       [--base-port 7370] [--pg-port 55532] [--silo-port 11410] [--run-timeout-s S] [--policy-only] [--no-build] [--keep]   (PostgreSQL + silo processes, as root)
if (args.Length == 0 || args[0] is "-h" or "--help")
{
    Console.WriteLine("usage: Orchestrator.Bench driver [--rounds N] [--host NAME] [--keep] [--uri URI --domain DOM] | copy [--rounds N] | backup [--rounds N] [--host NAME] [--keep] | checkpoint [--rounds N] [--host NAME] [--keep] | incremental [--rounds N] [--host NAME] [--keep] | fleet [--rounds N] [--hosts N] [--vms-per-host N] [--per-host N] [--fleet N] | fleet-scale --vms N [--silos 3] [--rounds N] [--copy-bytes-per-second B] [--base-port P] [--pg-port P] [--silo-port P] [--run-timeout-s S] [--policy-only] [--no-build] [--keep]");
    return 2;
}

return args[0] switch
{
    "driver" => await DriverBenchmark.RunAsync(BenchOptions.Parse(args[1..])),
    "copy" => await CopyBenchmark.RunAsync(BenchOptions.Parse(args[1..])),
    "backup" => await BackupBenchmark.RunAsync(BackupOptions(args[1..])),
    "checkpoint" => await CheckpointBenchmark.RunAsync(BackupOptions(args[1..])),
    "incremental" => await IncrementalBenchmark.RunAsync(BackupOptions(args[1..])),
    "fleet" => await FleetBenchmark.RunAsync(FleetBenchmark.Options.Parse(args[1..])),
    "fleet-scale" => await FleetScaleBenchmark.RunAsync(FleetScaleBenchmark.Options.Parse(args[1..])),
    _ => Usage(args[0]),
};

static int Usage(string mode)
{
    Console.Error.WriteLine($"unknown mode '{mode}'; modes: driver, copy, backup, checkpoint, incremental, fleet, fleet-scale");
    return 2;
}

static BenchOptions BackupOptions(string[] args)
{
    var options = BenchOptions.Parse(args);
    return options.Uri is null ? options : throw new ArgumentException("backup, checkpoint and incremental make their own guest: --uri/--domain do not apply");
}
