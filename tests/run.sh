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
if ! dotnet build Orchestrator.sln -c Debug -v quiet -nologo; then
  echo "build failed"
  echo "0 passed, 1 failed"
  exit 1
fi

results="$root/TestResults/run-$(date +%s)"
mkdir -p "$results"
status=0
for project in tests/*/*.csproj; do
  name=$(basename "$project" .csproj)
  grep -q '<IsTestProject>true</IsTestProject>' "$project" || continue
  echo "== $name"
  dotnet test "$project" --no-build -c Debug -nologo "${filter[@]}" \
    --logger "trx;LogFileName=$name.trx" --results-directory "$results" --logger "console;verbosity=minimal" || status=1
done

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
