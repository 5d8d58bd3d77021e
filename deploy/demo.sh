#!/usr/bin/env bash
# A first run: one silo on the embedded default (SQLite file, localhost clustering), driven with the orchestrator CLI.
#
#   deploy/demo.sh [--once] [--real | --simulated] [--no-build] [--configuration Release|Debug]
#
# Real mode (the default as root on Debian, where libvirt/QEMU are installed or installable): a private libvirt host
# "demo-01" of the test lab (tests/lab: its own libvirtd in a private mount namespace under $LAB_DIR, never the
# machine's libvirt) runs the lab's tiny guest web-1, which writes a counter to its disks. The tour backs it up live,
# shows the backup set on disk, restores it as a new VM, boots it and shows it counting on from the backup point.
# On exit it stops the silo and removes the private host with its VMs and images (the backups stay in .data/demo).
# Simulated mode (elsewhere, e.g. not root): a simulated host "demo-01" whose images are real sparse files under
# .data/demo (Orchestrator:Host:Simulated:ImageFiles), so every path the CLI prints exists; no guest data is involved.
#
#   --once           exit after the tour (0 when every step worked and every image path printed exists)
#   --real           real mode, or fail saying why not;  --simulated: simulated mode
#   --no-build       use the binaries as built (fails when they are missing); without it the solution is built only
#                    when a source is newer than the binaries
#   --configuration  the build to run (default Release)
# Environment: DEMO_GRPC_PORT (7070), DEMO_HTTP_PORT (7071), DEMO_SILO_PORT (11111), DEMO_DIR (<repo>/.data/demo),
# DEMO_HOST (the host's name, default demo-01), LAB_DIR (<repo>/.lab), DEMO_BOOT_TIMEOUT (seconds a guest may take
# to write its first records, default 240).
set -euo pipefail
root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
cd "$root"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
die() { echo "demo: ERROR: $*" >&2; exit 1; }

once=0 mode=auto build=auto configuration=Release
while [ $# -gt 0 ]; do
  case "$1" in
    --once) once=1; shift ;;
    --real) mode=real; shift ;;
    --simulated) mode=simulated; shift ;;
    --no-build) build=0; shift ;;
    --configuration) [ $# -ge 2 ] || usage; configuration="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "demo: unknown argument '$1'" >&2; usage ;;
  esac
done
[[ "$configuration" =~ ^(Release|Debug)$ ]] || die "--configuration must be Release or Debug, not '$configuration'"
grpc_port="${DEMO_GRPC_PORT:-7070}" http_port="${DEMO_HTTP_PORT:-7071}" silo_port="${DEMO_SILO_PORT:-11111}"
for p in "$grpc_port" "$http_port" "$silo_port"; do
  [[ "$p" =~ ^[0-9]+$ ]] && [ "$p" -ge 1 ] && [ "$p" -le 65535 ] || die "DEMO_*_PORT must be a port number 1..65535, not '$p'"
done
host="${DEMO_HOST:-demo-01}"
[[ "$host" =~ ^[a-z0-9][a-z0-9-]{0,30}$ ]] || die "DEMO_HOST must be 1-31 lower-case letters, digits and '-', not '$host'"
boot_timeout="${DEMO_BOOT_TIMEOUT:-240}"
[[ "$boot_timeout" =~ ^[0-9]+$ ]] || die "DEMO_BOOT_TIMEOUT must be a number of seconds, not '$boot_timeout'"
demo_dir="$(readlink -m "${DEMO_DIR:-$root/.data/demo}")"
[ "$demo_dir" != / ] || die "DEMO_DIR must not be /"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
t_start=$(date +%s%3N)
elapsed() { local ms=$(( $(date +%s%3N) - t_start )); printf '%d.%01d s' $((ms / 1000)) $(((ms % 1000) / 100)); }

# ---- which mode: real where a private libvirt host can run (root, Debian's apt or libvirt already there), else simulated
real_blocker() {
  [ "$(id -u)" = 0 ] || { echo "not root (the lab's private libvirt host needs unshare/mount)"; return; }
  command -v unshare >/dev/null && command -v nsenter >/dev/null || { echo "unshare/nsenter missing"; return; }
  if ! { command -v libvirtd >/dev/null && command -v qemu-system-x86_64 >/dev/null; }; then
    command -v apt-get >/dev/null || { echo "libvirt/QEMU not installed and no apt-get to install them"; return; }
  fi
}
if [ "$mode" = auto ]; then
  why="$(real_blocker)"
  if [ -z "$why" ]; then mode=real; else mode=simulated; fi
elif [ "$mode" = real ]; then
  why="$(real_blocker)"
  [ -z "$why" ] || die "--real: $why"
fi
if [ "$mode" = real ]; then
  echo "== mode: REAL - a private libvirt host (tests/lab) with a real tiny QEMU guest; --simulated for the simulated host"
else
  echo "== mode: SIMULATED - no real VM: a simulated host whose image files are empty sparse placeholders${why:+ (real mode: $why)}"
fi

# ---- binaries: built only when missing or older than a source
silo_dll="$root/silo/Orchestrator.Silo/bin/$configuration/net10.0/Orchestrator.Silo.dll"
cli_dll="$root/client/Orchestrator.Cli/bin/$configuration/net10.0/orchestrator.dll"
stale() {
  [ -f "$silo_dll" ] && [ -f "$cli_dll" ] || return 0
  local newer
  newer="$(find grains silo client Directory.Build.props Directory.Packages.props global.json \
    \( -name bin -o -name obj \) -prune -o -type f -newer "$silo_dll" -print -quit 2>/dev/null)"
  [ -n "$newer" ] || newer="$(find grains silo client \( -name bin -o -name obj \) -prune -o -type f -newer "$cli_dll" -print -quit 2>/dev/null)"
  [ -n "$newer" ]
}
if [ "$build" = 0 ]; then
  [ -f "$silo_dll" ] && [ -f "$cli_dll" ] || die "--no-build: the $configuration build is missing ($silo_dll); run without --no-build"
elif stale; then
  echo "== building ($configuration)"
  dotnet build Orchestrator.sln -c "$configuration" -v quiet -nologo >/dev/null || die "build failed: dotnet build Orchestrator.sln -c $configuration"
else
  echo "== build is current ($configuration)"
fi
cli=(dotnet "$cli_dll")
export ORCHESTRATOR_ENDPOINT="http://127.0.0.1:$grpc_port"

# ---- a fresh data directory per mode; the transcript collects what the CLI printed
data="$demo_dir/$mode"
rm -rf "$data"
mkdir -p -m 0700 "$demo_dir" "$data" "$data/backups"
transcript="$data/transcript.txt"
: > "$transcript"
lab=(bash "$root/tests/lab/host.sh") vmsh=(bash "$root/tests/lab/vm.sh")
pid="" lab_up=0

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  if [ "$lab_up" = 1 ]; then
    echo "== cleaning up: the private libvirt host $host, its VMs and images ($(lab_dir)/hosts/$host)"
    "${lab[@]}" clean "$host" >/dev/null 2>&1 || echo "demo: WARNING: tests/lab/host.sh clean $host failed" >&2
  fi
  exit "$rc"
}
lab_dir() { readlink -m "${LAB_DIR:-$root/.lab}"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- real mode: the private host and the guest
if [ "$mode" = real ]; then
  echo "== preparing the private libvirt host $host (tests/lab; LAB_DIR=$(lab_dir))"
  bash "$root/tests/lab/install.sh" >/dev/null || die "tests/lab/install.sh failed (apt could not install libvirt/QEMU); --simulated runs without them"
  bash "$root/tests/lab/guest-build.sh" >/dev/null 2>"$data/lab.log" || { cat "$data/lab.log" >&2; die "tests/lab/guest-build.sh failed (it downloads a Debian kernel package once); --simulated runs without it"; }
  lab_up=1
  "${lab[@]}" clean "$host" >/dev/null 2>>"$data/lab.log" || true   # leftovers of an interrupted run
  uri="$("${lab[@]}" start "$host" 2>>"$data/lab.log" | tail -n 1)"
  [[ "$uri" == qemu+unix://* ]] || { cat "$data/lab.log" >&2; die "the private libvirt host did not start (log: $data/lab.log); --simulated runs without it"; }
  # web-1: a qcow2 and a raw disk, writing one counter record to both every 100 ms.
  "${vmsh[@]}" create "$host" web-1 --disks "qcow2:64M raw:32M" --interval-ms 100 --label tier=web --label env=demo 2>>"$data/lab.log" \
    || { cat "$data/lab.log" >&2; die "tests/lab/vm.sh create failed"; }
  echo "   host $uri ready, guest web-1 booting (TCG, direct kernel boot) after $(elapsed)"
  host_uri="$uri"
else
  host_uri="simulated://$host"
fi

echo "== starting the silo (gRPC 127.0.0.1:$grpc_port, health + dashboard http://127.0.0.1:$http_port)"
silo_env=(
  Orchestrator__Host__Name="$host" Orchestrator__Host__Uri="$host_uri"
  Orchestrator__Persistence__SqlitePath="$data/orchestrator.db"
  Orchestrator__Backup__Roots__0="$data/backups" Orchestrator__Backup__DefaultTarget="$data/backups"
  Orchestrator__Endpoints__GrpcPort="$grpc_port" Orchestrator__Endpoints__HttpPort="$http_port"
  Orchestrator__Cluster__SiloPort="$silo_port"
)
if [ "$mode" = simulated ]; then
  silo_env+=(Orchestrator__Host__SeedDemo=true Orchestrator__Host__Simulated__ImageFiles="$data/images")
else
  silo_env+=(Orchestrator__Host__SeedDemo=false)
fi
(cd "$data" && exec env "${silo_env[@]}" dotnet "$silo_dll" --contentRoot "$root/silo/Orchestrator.Silo") >"$data/silo.log" 2>&1 &
pid=$!
ready=0
for _ in $(seq 1 300); do
  if curl -fs "http://127.0.0.1:$http_port/health/ready" >/dev/null 2>&1; then ready=1; break; fi
  kill -0 $pid 2>/dev/null || { cat "$data/silo.log" >&2; die "the silo exited"; }
  sleep 0.2
done
[ $ready = 1 ] || { tail -n 40 "$data/silo.log" >&2; die "the silo was not ready within 60 s"; }
# The first inventory sync runs right after start.
for _ in $(seq 1 150); do "${cli[@]}" vm show "$host/web-1" >/dev/null 2>&1 && break; sleep 0.2; done

run() { echo; echo "\$ orchestrator $*" | tee -a "$transcript"; "${cli[@]}" "$@" 2>&1 | tee -a "$transcript"; return "${PIPESTATUS[0]}"; }
say() { echo; echo "# $*"; }

run host list
run vm list
run vm show "$host/web-1"
run chain show "$host/web-1/vda"

if [ "$mode" = real ]; then
  say "web-1 writes a counter record to both disks every 100 ms; waiting for record 20 (boot under TCG takes 10-30 s)"
  "${vmsh[@]}" wait "$host" web-1 --seq 20 --timeout "$boot_timeout" >/dev/null 2>>"$data/lab.log" || die "web-1 did not boot within ${boot_timeout}s (console: $("${vmsh[@]}" console "$host" web-1))"
fi

run backup start "$host/web-1" --wait
key="$("${cli[@]}" backup list --vm "$host/web-1" --format json | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r[0]["key"] if r else "")')"
[ -n "$key" ] || die "no backup run of $host/web-1 listed"
run backup show "$key"
set_dir="$("${cli[@]}" backup show "$key" --format json | python3 -c 'import json,sys,os; r=json.load(sys.stdin); print(r["backup_set_path"])')"
say "the backup set on disk:"
(cd "$set_dir" && ls -ls --block-size=K) | sed 's/^/   /'
backup_images=()
while IFS= read -r p; do backup_images+=("$p"); done < <(find "$set_dir" -maxdepth 1 -type f \( -name '*.qcow2' -o -name '*.raw' \) | sort)

restored=web-1-restored
if [ "$mode" = real ]; then
  say "every record in the copies is whole and the counters agree across both disks (tests/lab/counter-check):"
  check="$("$root/tests/lab/counter-check" "${backup_images[@]}")" || die "the backup is not point-in-time consistent: $check"
  at_backup="$(python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["max"])' <<<"$check")"
  echo "   consistent, highest record in the backup: $at_backup"
  run restore "$key" --as "$restored" --define --start
  say "the restored VM $restored was started by the restore; it resumes at the backup point + 1"
  want=$((at_backup + 5))
  seen="$("${vmsh[@]}" wait "$host" "$restored" --seq "$want" --timeout "$boot_timeout" 2>>"$data/lab.log")" \
    || die "$restored did not count to $want within ${boot_timeout}s (console: $("${vmsh[@]}" console "$host" "$restored"))"
  first="$(grep -m1 -o 'orch: start seq=[0-9]*' "$("${vmsh[@]}" console "$host" "$restored")" || true)"
  [ "$first" = "orch: start seq=$((at_backup + 1))" ] || die "$restored did not resume at the backup point + 1 ($((at_backup + 1))): its console says '$first'"
  echo "   $restored booted and counts on from the backup point: '$first' (backup point $at_backup), now at seq $seen"
  say "its console (the last lines):"
  tail -n 4 "$("${vmsh[@]}" console "$host" "$restored")" | sed 's/^/   /'
  run vm list
  run checkpoint create "$host/web-1" || true   # refused: vdb is raw
else
  run restore "$key" --as "$restored" --define
  run checkpoint create "$host/web-2"
  run checkpoint list "$host/web-2"
  run checkpoint create "$host/legacy-1" || true   # refused: its disk is raw
  run checkpoint schedule set "$host/web-2" --cron '@hourly' --keep-last 24 --keep-daily 7
fi

# ---- every image path the CLI printed exists (before the clean-up removes the private host's images)
say "every image path printed above, on disk now (apparent size, allocated):"
mapfile -t paths < <(grep -oE '/[^[:space:]"'"'"',]+\.(qcow2|raw|img)\b' "$transcript" | sort -u)
missing=0
for p in "${paths[@]}"; do
  if [ -f "$p" ]; then
    printf '   ok       %s  %s bytes, %s KiB allocated\n' "$p" "$(stat -c %s "$p")" "$(( $(stat -c %b "$p") * $(stat -c %B "$p") / 1024 ))"
  else
    printf '   MISSING  %s\n' "$p"; missing=$((missing + 1))
  fi
done
[ ${#paths[@]} -gt 0 ] || die "the CLI printed no image path"
[ $missing = 0 ] || die "$missing of ${#paths[@]} image paths printed do not exist"
echo "image paths checked: ${#paths[@]}, all exist"
echo
echo "tour done in $(elapsed) ($mode mode). State: $data/orchestrator.db; silo log: $data/silo.log; backups: $data/backups"
if [ "$once" = 1 ]; then exit 0; fi
stops="Ctrl-C stops it"; [ "$lab_up" = 1 ] && stops="Ctrl-C stops it and removes the private host $host"
echo "silo running (pid $pid); try: ORCHESTRATOR_ENDPOINT=$ORCHESTRATOR_ENDPOINT dotnet ${cli_dll#"$root"/} vm list   -- $stops"
wait $pid
