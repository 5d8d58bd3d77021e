#!/usr/bin/env bash
# The whole test suite: installs what it needs (PostgreSQL, libvirt + QEMU for the lab), builds the solution,
# runs every test project one after the other, stops everything it started, and closes with
# "N passed, N failed".
#   tests/run.sh [--no-install] [--filter EXPR]
set -uo pipefail
root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
cd "$root"

install=1
filter=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-install) install=0 ;;
    --filter) filter=(--filter "$2"); shift ;;
    *) echo "usage: tests/run.sh [--no-install] [--filter EXPR]" >&2; exit 2 ;;
  esac
  shift
done

export LAB_DIR=${LAB_DIR:-$root/.lab}
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

cleanup() {
  if [ -x tests/lab/host.sh ]; then bash tests/lab/host.sh stop-all >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

if [ "$install" = 1 ]; then
  echo "== installing test dependencies"
  bash tests/infra/postgres.sh install || { echo "PostgreSQL install failed"; echo "0 passed, 1 failed"; exit 1; }
  bash tests/infra/ops-tools.sh install || { echo "systemd/prometheus tools install failed"; echo "0 passed, 1 failed"; exit 1; }
  if [ -f tests/lab/install.sh ]; then
    bash tests/lab/install.sh || { echo "lab install failed"; echo "0 passed, 1 failed"; exit 1; }
  fi
fi

echo "== building"
# Analyzers and code-style checks are the developer's gate (`dotnet build` with zero warnings and `dotnet format
# --verify-no-changes` before a commit); the test build skips them, which takes a third off the build time.
if ! dotnet build Orchestrator.sln -c Debug -v quiet -nologo -p:RunAnalyzers=false -p:EnforceCodeStyleInBuild=false; then
  echo "build failed"
  echo "0 passed, 1 failed"
  exit 1
fi

results="$root/TestResults/run-$(date +%s)"
mkdir -p "$results"
status=0
run_project() {
  local name
  name=$(basename "$1" .csproj)
  dotnet test "$1" --no-build -c Debug -nologo "${filter[@]}" \
    --logger "trx;LogFileName=$name.trx" --results-directory "$results" --logger "console;verbosity=minimal"
}
# The projects that need no lab (Unit, Cli) run beside the first lab project (<UsesLab>: Hypervisor, which mostly
# waits on QEMU and libvirt); their output is kept apart and shown whole when they end. The integration tests run
# alone after them (their lab tests have time bounds that a busy CPU would stretch).
side=(); lab=()
for project in tests/*/*.csproj; do
  grep -q '<IsTestProject>true</IsTestProject>' "$project" || continue
  if grep -q '<UsesLab>true</UsesLab>' "$project"; then lab+=("$project"); else side+=("$project"); fi
done
(
  side_status=0
  for project in "${side[@]}"; do
    run_project "$project" >"$results/$(basename "$project" .csproj).log" 2>&1 || side_status=1
  done
  exit $side_status
) &
side_pid=$!
# The first lab project beside them, then the rest alone.
for project in "${lab[@]:0:1}"; do echo "== $(basename "$project" .csproj)"; run_project "$project" || status=1; done
wait "$side_pid" || status=1
for project in "${side[@]}"; do echo "== $(basename "$project" .csproj)"; cat "$results/$(basename "$project" .csproj).log"; done
for project in "${lab[@]:1}"; do echo "== $(basename "$project" .csproj)"; run_project "$project" || status=1; done

passed=0; failed=0
for trx in "$results"/*.trx; do
  [ -f "$trx" ] || continue
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -n 1)
  p=$(echo "$counters" | grep -o ' passed="[0-9]*"' | grep -o '[0-9]*')
  f=$(echo "$counters" | grep -o ' failed="[0-9]*"' | grep -o '[0-9]*')
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
done
if [ "$status" != 0 ] && [ "$failed" = 0 ]; then failed=1; fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
