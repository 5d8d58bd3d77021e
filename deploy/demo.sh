#!/usr/bin/env bash
# The main job on the embedded default: one silo (SQLite file, localhost clustering) serving the simulated
# demo host "demo-01", queried with the orchestrator CLI. Runs until Ctrl-C (or exits after the tour with --once).
#   deploy/demo.sh [--once]
set -euo pipefail
root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
cd "$root"
once=0; [ "${1:-}" = "--once" ] && once=1

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
echo "== building (Release)"
dotnet build Orchestrator.sln -c Release -v quiet -nologo >/dev/null

data="$root/.data/demo"
mkdir -p "$data"
silo="$root/silo/Orchestrator.Silo/bin/Release/net10.0/Orchestrator.Silo.dll"
cli=(dotnet "$root/client/Orchestrator.Cli/bin/Release/net10.0/orchestrator.dll")

echo "== starting the silo (gRPC 127.0.0.1:7070, health + dashboard http://127.0.0.1:7071)"
mkdir -p "$data/backups"
(cd "$data" && Orchestrator__Persistence__SqlitePath="$data/orchestrator.db" \
  Orchestrator__Backup__Roots__0="$data/backups" Orchestrator__Backup__DefaultTarget="$data/backups" \
  exec dotnet "$silo" --contentRoot "$root/silo/Orchestrator.Silo") >"$data/silo.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT INT TERM

for _ in $(seq 1 150); do
  if curl -fs http://127.0.0.1:7071/health/ready >/dev/null 2>&1; then break; fi
  kill -0 $pid 2>/dev/null || { echo "silo exited:"; cat "$data/silo.log"; exit 1; }
  sleep 0.2
done
# The first inventory sync runs right after start.
for _ in $(seq 1 50); do "${cli[@]}" vm show demo-01/web-1 >/dev/null 2>&1 && break; sleep 0.2; done

run() { echo; echo "\$ orchestrator $*"; "${cli[@]}" "$@"; }
run host list
run vm list
run vm show demo-01/web-1
run chain show demo-01/web-1/vdb
run vm list --host demo-01 --format json
run backup start demo-01/web-1 --wait
run backup list
run checkpoint create demo-01/web-2
run checkpoint list demo-01/web-2
run checkpoint create demo-01/legacy-1 || true   # refused: its disk is raw
run checkpoint schedule set demo-01/web-2 --cron '@hourly' --keep-last 24 --keep-daily 7
echo
echo "state is in $data/orchestrator.db; the silo log in $data/silo.log"
if [ "$once" = 1 ]; then exit 0; fi
echo "silo running (pid $pid); try: dotnet client/Orchestrator.Cli/bin/Release/net10.0/orchestrator.dll vm list   -- Ctrl-C stops it"
wait $pid
