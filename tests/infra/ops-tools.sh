#!/usr/bin/env bash
# Installs the tools the deployment tests use (run as root; Debian packages):
#   systemd-analyze (package systemd): verifies deploy/systemd/orchestrator-silo.service
#   promtool and prometheus (package prometheus): checks and unit-tests deploy/grafana/orchestrator-alerts.yml and
#   scrapes a real silo in tests/Orchestrator.IntegrationTests/Deploy/PrometheusScrapeTests.cs
# The tests call this themselves when a tool is missing (tests/run.sh calls it up front), and fail with its
# output when it cannot install. Installing the prometheus package does not start it without systemd as PID 1;
# where systemd runs it starts a service on :9090, which the tests do not use (they start their own).
#   tests/infra/ops-tools.sh install
set -euo pipefail
case "${1:-install}" in
  install) ;;
  *) echo "usage: tests/infra/ops-tools.sh install" >&2; exit 2 ;;
esac
missing=()
command -v systemd-analyze >/dev/null || missing+=(systemd)
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || missing+=(prometheus)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "ops-tools.sh: ${missing[*]} missing; run as root to install them" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed ${missing[*]}"
