#!/usr/bin/env bash
# shellcheck disable=SC1090,SC2153,SC2015,SC2154  # state is sourced from cluster.env; A && B || die is intended
# A real multi-host Orchestrator cluster on one machine: a private PostgreSQL, N libvirt "hosts" (each
# libvirtd + virtlogd in its own mount namespace, tests/lab/host.sh) with labelled test guests
# (tests/lab/vm.sh), and N silo processes in Cluster mode, one per host, on their own ports.
#
#   deploy/local/cluster.sh up [--hosts N] [--vms-per-host M] [--interval-ms MS] [--base-port P]
#                              [--pg-port P] [--silo-port P] [--otlp URL] [--no-install] [--no-build]
#                              [--configuration Release|Debug]
#   deploy/local/cluster.sh up --simulated [--hosts N] [--vms-per-host M] [--copy-bytes-per-second B]
#                              [--disk-size-bytes B] [same port, build and install options]
#   deploy/local/cluster.sh down          stop silos, delete guests, stop hosts and PostgreSQL (safe to re-run)
#   deploy/local/cluster.sh status        what runs, where, and whether it answers
#
# up: N hosts kvm-01..kvm-NN (default 3), M guests app-1..app-M on each (default 1), labels
#     env=local, tier=web (odd) or tier=db (even). Silo i (1-based) listens on gRPC BASE+10*(i-1) and
#     HTTP BASE+1+10*(i-1) (BASE default 7070), Orleans silo port 11110+i (no gateway).
#     It waits until every silo is an active member and lists its host's guests, then prints the endpoints.
#     On any failure it takes down what it started. --silo-port moves the Orleans silo ports (P+i).
# up --simulated: no libvirt and no lab guests: N hosts sim-01..sim-NN served by simulated hypervisors, each
#     seeded with M VMs vm-00001... (0..100000; two qcow2 disks each, vda a linked clone of a shared template;
#     labels fleet=scale, tier=web (odd) or tier=db (even); settings Orchestrator:Host:Simulated:*), copying at
#     B bytes/s per copy (default: the silo's, 8 GiB/s). Needs only PostgreSQL. Waits as above (every VM listed).
#     The sample policy is policy-simulated.yaml (every VM labelled fleet=scale).
# Everything lives under $CLUSTER_DIR (default <repo>/.local-cluster, git-ignored):
#     cluster.env (what `up` started), lab/ (LAB_DIR of the hosts; the guest build is kept across `down`),
#     pg/ (PostgreSQL data and log), silos/HOST/{silo.pid,silo.log} (working dir of each silo),
#     backups/ (the backup root of every silo, as /var/backups/vms would be on every real host) with
#     backups/HOST/ (that host's default target), policy-local.yaml (a sample live-backup policy).
# Reuses, and calls: tests/lab/install.sh, tests/lab/guest-build.sh, tests/lab/host.sh, tests/lab/vm.sh
# (the test lab) and tests/infra/postgres.sh (the tests' private PostgreSQL). Run as root (unshare, apt).
set -euo pipefail
REPO="$(cd "$(dirname "$(readlink -f "$0")")/../.." && pwd)"
CONFIGURATION="${CONFIGURATION:-Release}"
CLUSTER_DIR="$(readlink -m "${CLUSTER_DIR:-$REPO/.local-cluster}")"
LAB_DIR="$CLUSTER_DIR/lab"
export LAB_DIR CLUSTER_DIR DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
STATE="$CLUSTER_DIR/cluster.env"
set_binaries() {
    SILO_DLL="$REPO/silo/Orchestrator.Silo/bin/$CONFIGURATION/net10.0/Orchestrator.Silo.dll"
    CLI_DLL="$REPO/client/Orchestrator.Cli/bin/$CONFIGURATION/net10.0/orchestrator.dll"
    CLI_REL="client/Orchestrator.Cli/bin/$CONFIGURATION/net10.0/orchestrator"
}
set_binaries
# The cluster's mode (lab or simulated); cluster.env records it for status and down.
MODE=lab
SILO_PORT=11110

log() { echo "cluster: $*" >&2; }
die() { echo "cluster: ERROR: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
now_ms() { date +%s%3N; }
lab() { bash "$REPO/tests/lab/$1" "${@:2}"; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
host_name() { if [ "$MODE" = simulated ]; then printf 'sim-%02d' "$1"; else printf 'kvm-%02d' "$1"; fi; }

# The silo whose pid file is $1, if that pid is alive and really is our silo (its working directory is the
# pid file's directory and it runs Orchestrator.Silo.dll): a recycled pid is never mistaken for it.
silo_pid() {
    local f="$1" pid
    [ -s "$f" ] || return 1
    pid="$(cat "$f")"; [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$(dirname "$f")" ] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'Orchestrator.Silo.dll' || return 1
    echo "$pid"
}

pg_dir() {
    # The postgres account must reach the data dir; a cluster dir it cannot traverse (e.g. under /root)
    # gets its PostgreSQL under the temp dir instead.
    if runuser -u postgres -- test -x "$CLUSTER_DIR" 2>/dev/null; then echo "$CLUSTER_DIR/pg"
    else echo "${TMPDIR:-/tmp}/orchestrator-local-cluster-$(echo "$CLUSTER_DIR" | md5sum | cut -c1-8)-pg"; fi
}

cmd_up() {
    local hosts=3 vms=1 interval=100 base=7070 pgport=55432 otlp="" install=1 build=1 copy_bps="" disk_bytes=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --simulated) MODE=simulated; shift ;;
            --copy-bytes-per-second) copy_bps="$2"; shift 2 ;;
            --disk-size-bytes) disk_bytes="$2"; shift 2 ;;
            --silo-port) SILO_PORT="$2"; shift 2 ;;
            --configuration) CONFIGURATION="$2"; set_binaries; shift 2 ;;
            --hosts) hosts="$2"; shift 2 ;;
            --vms-per-host) vms="$2"; shift 2 ;;
            --interval-ms) interval="$2"; shift 2 ;;
            --base-port) base="$2"; shift 2 ;;
            --pg-port) pgport="$2"; shift 2 ;;
            --otlp) otlp="$2"; shift 2 ;;
            --no-install) install=0; shift ;;
            --no-build) build=0; shift ;;
            *) usage ;;
        esac
    done
    [[ "$hosts$vms$interval$base$pgport$SILO_PORT$copy_bps$disk_bytes" =~ ^[0-9]+$ ]] || die "numeric options expected"
    [[ "$CONFIGURATION" =~ ^(Release|Debug)$ ]] || die "--configuration must be Release or Debug"
    [ "$hosts" -ge 1 ] && [ "$hosts" -le 20 ] || die "--hosts must be 1..20"
    if [ "$MODE" = simulated ]; then
        [ "$vms" -ge 0 ] && [ "$vms" -le 100000 ] || die "--vms-per-host must be 0..100000 with --simulated"
    else
        [ "$vms" -ge 0 ] && [ "$vms" -le 10 ] || die "--vms-per-host must be 0..10 (real guests; up to 100000 with --simulated)"
        [ -z "$copy_bps$disk_bytes" ] || die "--copy-bytes-per-second and --disk-size-bytes apply to --simulated only"
    fi
    [ "$(id -u)" -eq 0 ] || die "run as root (the lab hosts use unshare and mount; PostgreSQL runs as postgres; installs use apt)"
    command -v dotnet >/dev/null || die "the .NET 10 SDK (dotnet) is required"
    if [ -f "$STATE" ]; then
        local f
        for f in "$CLUSTER_DIR"/silos/*/silo.pid; do
            if silo_pid "$f" >/dev/null; then die "a cluster is already up in $CLUSTER_DIR (see: $0 status); run '$0 down' first"; fi
        done
    fi
    local i h sock="$LAB_DIR/hosts/kvm-00/run/libvirt/libvirt-sock"
    [ "$MODE" = simulated ] || [ ${#sock} -le 107 ] || die "CLUSTER_DIR is too long for the hosts' libvirt sockets (${#sock} > 107 bytes: $sock)"
    port_busy "$pgport" && die "port $pgport (PostgreSQL) is in use; pick another with --pg-port"
    for i in $(seq 1 "$hosts"); do
        for p in $((base + 10 * (i - 1))) $((base + 1 + 10 * (i - 1))) $((SILO_PORT + i)) $((29999 + i)); do
            port_busy "$p" && die "port $p is in use (silo $(host_name "$i")); pick another --base-port or stop what uses it"
        done
    done

    local t0; t0=$(now_ms)
    mkdir -p "$CLUSTER_DIR/silos" "$CLUSTER_DIR/backups" "$LAB_DIR"
    # From here on a failure (set -e or die) takes down whatever was started.
    trap 'rc=$?; if [ $rc != 0 ]; then log "up failed; taking down what was started"; cmd_down || true; fi; exit $rc' EXIT
    if [ "$install" = 1 ]; then
        log "installing what is missing (PostgreSQL$([ "$MODE" = simulated ] || echo ', libvirt + QEMU'))"
        bash "$REPO/tests/infra/postgres.sh" install
        [ "$MODE" = simulated ] || lab install.sh >&2
    fi
    [ "$MODE" = simulated ] || lab guest-build.sh
    if [ "$build" = 1 ]; then
        log "building the silo and the CLI ($CONFIGURATION)"
        dotnet build "$REPO/silo/Orchestrator.Silo" -c "$CONFIGURATION" -v quiet -nologo >&2
        dotnet build "$REPO/client/Orchestrator.Cli" -c "$CONFIGURATION" -v quiet -nologo >&2
    fi
    [ -f "$SILO_DLL" ] && [ -f "$CLI_DLL" ] || die "silo or CLI not built (run without --no-build)"

    local pg; pg="$(pg_dir)"
    log "starting PostgreSQL on 127.0.0.1:$pgport ($pg)"
    local conn; conn="$(bash "$REPO/tests/infra/postgres.sh" start "$pg" "$pgport")"
    {
        echo "MODE=$MODE"; echo "HOSTS=$hosts"; echo "VMS=$vms"; echo "BASE=$base"; echo "PG_DIR='$pg'"; echo "PG_PORT=$pgport"
        echo "CONN='$conn'"; echo "SILO_PORT=$SILO_PORT"; echo "CONFIGURATION=$CONFIGURATION"
        echo "COPY_BPS=$copy_bps"; echo "DISK_BYTES=$disk_bytes"
    } > "$STATE"

    if [ "$MODE" = simulated ]; then
        write_simulated_policy
        log "starting $hosts silos with simulated hosts of $vms VMs each"
        for i in $(seq 1 "$hosts"); do start_silo "$i" "$otlp"; done
        for i in $(seq 1 "$hosts"); do wait_silo "$i"; done
        trap - EXIT
        log "up in $(( ($(now_ms) - t0) / 1000 )) s"
        print_summary
        return 0
    fi

    log "starting $hosts libvirt hosts"
    local pids=()
    for i in $(seq 1 "$hosts"); do
        h="$(host_name "$i")"
        lab host.sh start "$h" > /dev/null 2> "$CLUSTER_DIR/host-$h.out" & pids+=($!)
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || { cat "$CLUSTER_DIR/host-$(host_name $((i + 1))).out" >&2; die "host $(host_name $((i + 1))) did not start"; }
    done
    rm -f "$CLUSTER_DIR"/host-*.out

    local k tier
    for i in $(seq 1 "$hosts"); do
        h="$(host_name "$i")"
        for k in $(seq 1 "$vms"); do
            if [ $((k % 2)) = 1 ]; then tier=web; else tier=db; fi
            lab vm.sh create "$h" "app-$k" --disks "qcow2:64M" --interval-ms "$interval" \
                --label env=local --label "tier=$tier" --label "host-index=$i" 2>&1 | sed 's/^/  /' >&2
        done
    done

    write_sample_policy
    for i in $(seq 1 "$hosts"); do start_silo "$i" "$otlp"; done
    for i in $(seq 1 "$hosts"); do wait_silo "$i"; done
    trap - EXIT
    log "up in $(( ($(now_ms) - t0) / 1000 )) s"
    print_summary
}

# A live-backup policy for every guest of this cluster (labels env=local), into ROOT/{host}/{policy}.
write_sample_policy() {
    cat > "$CLUSTER_DIR/policy-local.yaml" <<YAML
# Written by deploy/local/cluster.sh: a live backup of every guest of the local cluster, nightly at 02:00 UTC.
#   orchestrator policy apply -f $CLUSTER_DIR/policy-local.yaml
#   orchestrator policy run local-nightly --watch
name: local-nightly
kind: live-backup
description: every guest of the local cluster
selector:
  hosts: ["kvm-*"]
  labels:
    env: local
schedule:
  cron: "0 2 * * *"
  time_zone: UTC
retention: {keep_last: 3}
target: $CLUSTER_DIR/backups/{host}/{policy}
concurrency: {per_host: 1, fleet: 2}
rpo: 26h
YAML
}

# A live-backup policy for every VM of the simulated cluster (labels fleet=scale), budgets wide open.
write_simulated_policy() {
    . "$STATE"
    local n=$((HOSTS * VMS)) per_host=$VMS
    [ "$n" -ge 1 ] || n=1
    [ "$per_host" -ge 1 ] || per_host=1
    [ "$per_host" -le 1000 ] || per_host=1000
    [ "$n" -le 10000 ] || n=10000
    cat > "$CLUSTER_DIR/policy-simulated.yaml" <<YAML
# Written by deploy/local/cluster.sh up --simulated: a live backup of every simulated VM, on demand only.
#   orchestrator policy apply -f $CLUSTER_DIR/policy-simulated.yaml
#   orchestrator policy run fleet-scale --watch
name: fleet-scale
kind: live-backup
description: every VM of the simulated cluster
selector:
  hosts: ["sim-*"]
  labels:
    fleet: scale
retention: {keep_last: 2}
target: $CLUSTER_DIR/backups/{host}/{policy}
concurrency: {per_host: $per_host, fleet: $n}
YAML
}

silo_env() { # i -> NAME=VALUE lines for silo i
    local i="$1" h; h="$(host_name "$1")"
    # shellcheck disable=SC1090
    . "$STATE"
    local conn="$CONN"
    if [ "$MODE" = simulated ]; then
        # Each silo opens two Npgsql pools (grain storage; membership and reminders): keep all of them within the
        # private PostgreSQL's 200 connections, with room for the CLI and the benchmark's own connection.
        local pool=$(( 180 / (2 * HOSTS) )); [ "$pool" -le 50 ] || pool=50
        conn="$(echo "$CONN" | sed 's/;*Maximum Pool Size=[0-9]*//');Maximum Pool Size=$pool"
        # PG_CONN_EXTRA: more Npgsql settings for the silos (e.g. 'Max Auto Prepare=0' for the benchmark's before/after).
        [ -z "${PG_CONN_EXTRA:-}" ] || conn="$conn;$PG_CONN_EXTRA"
        echo "Orchestrator__Host__Uri=simulated://$h"
        echo "Orchestrator__Host__Simulated__Vms=$VMS"
        [ -z "${COPY_BPS:-}" ] || echo "Orchestrator__Host__Simulated__CopyBytesPerSecond=$COPY_BPS"
        [ -z "${DISK_BYTES:-}" ] || echo "Orchestrator__Host__Simulated__DiskSizeBytes=$DISK_BYTES"
    else
        echo "Orchestrator__Host__Uri=$(lab host.sh uri "$h")"
    fi
    cat <<ENV
Orchestrator__Host__Name=$h
Orchestrator__Host__SeedDemo=false
Orchestrator__Persistence__Mode=Cluster
Orchestrator__Persistence__PostgresConnectionString=$conn
Orchestrator__Cluster__ClusterId=local-cluster
Orchestrator__Cluster__ServiceId=local-cluster
Orchestrator__Cluster__SiloPort=$((SILO_PORT + i))
Orchestrator__Endpoints__GrpcPort=$((BASE + 10 * (i - 1)))
Orchestrator__Endpoints__HttpPort=$((BASE + 1 + 10 * (i - 1)))
Orchestrator__Endpoints__Dashboard=$([ "$i" = 1 ] && echo true || echo false)
Orchestrator__Backup__Roots__0=$CLUSTER_DIR/backups
Orchestrator__Backup__DefaultTarget=$CLUSTER_DIR/backups/$h
ENV
}

start_silo() {
    local i="$1" otlp="${2:-}" h; h="$(host_name "$1")"
    local d="$CLUSTER_DIR/silos/$h"
    mkdir -p "$d" "$CLUSTER_DIR/backups/$h"
    local -a env=()
    mapfile -t env < <(silo_env "$i")
    if [ -n "$otlp" ]; then env+=("OTEL_EXPORTER_OTLP_ENDPOINT=$otlp" "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"); fi
    # setsid: the silo outlives this script and the terminal; its own session, never our process group.
    (cd "$d" && exec setsid env "${env[@]}" dotnet "$SILO_DLL" --contentRoot "$REPO/silo/Orchestrator.Silo") \
        >> "$d/silo.log" 2>&1 < /dev/null &
    echo $! > "$d/silo.pid"
    sleep 0.2
    silo_pid "$d/silo.pid" >/dev/null || { tail -n 20 "$d/silo.log" >&2; die "silo $h did not start"; }
    printf '%s\n' "${env[@]}" > "$d/silo.env"
    log "silo $h: started (pid $(cat "$d/silo.pid"), log $d/silo.log)"
}

wait_silo() {
    local i="$1" h; h="$(host_name "$1")"
    . "$STATE"
    local d="$CLUSTER_DIR/silos/$h" http=$((BASE + 1 + 10 * (i - 1))) grpc=$((BASE + 10 * (i - 1)))
    # A simulated host's first inventory sync activates every VM grain: allow 180 s plus 0.1 s per VM.
    local limit=$(( 180 + VMS / 10 ))
    local deadline=$(( $(date +%s) + limit )) t0; t0=$(now_ms)
    until [ "$(curl -fs "http://127.0.0.1:$http/health/ready" 2>/dev/null)" = Healthy ]; do
        silo_pid "$d/silo.pid" >/dev/null || { tail -n 40 "$d/silo.log" >&2; die "silo $h exited"; }
        [ "$(date +%s)" -lt "$deadline" ] || { tail -n 40 "$d/silo.log" >&2; die "silo $h not ready within $limit s"; }
        sleep 0.5
    done
    # Ready means an active member; wait also for its first inventory sync (its guests are listed).
    local n
    while :; do
        n="$(dotnet "$CLI_DLL" vm list --host "$h" --format json --endpoint "http://127.0.0.1:$grpc" 2>/dev/null | grep -o '"key"' | wc -l || true)"
        [ "${n:-0}" -ge "$VMS" ] && break
        silo_pid "$d/silo.pid" >/dev/null || { tail -n 40 "$d/silo.log" >&2; die "silo $h exited"; }
        [ "$(date +%s)" -lt "$deadline" ] || die "silo $h: its $VMS guests were not listed within $limit s (${n:-0} listed)"
        sleep 2
    done
    log "silo $h: ready, $n guests listed ($(( $(now_ms) - t0 )) ms)"
}

print_summary() {
    . "$STATE"
    local i h
    echo
    CONFIGURATION="${CONFIGURATION:-Release}"; set_binaries
    echo "Orchestrator local cluster ($HOSTS $([ "$MODE" = simulated ] && echo "simulated hosts x $VMS VMs" || echo hosts), PostgreSQL 127.0.0.1:$PG_PORT, state in $CLUSTER_DIR)"
    printf '%-8s %-24s %-24s %s\n' HOST GRPC HEALTH BACKUPS
    for i in $(seq 1 "$HOSTS"); do
        h="$(host_name "$i")"
        printf '%-8s %-24s %-24s %s\n' "$h" "http://127.0.0.1:$((BASE + 10 * (i - 1)))" \
            "http://127.0.0.1:$((BASE + 1 + 10 * (i - 1)))" "$CLUSTER_DIR/backups/$h"
    done
    echo
    echo "Try (from $REPO):"
    echo "  $CLI_REL --endpoint http://127.0.0.1:$BASE host list"
    echo "  $CLI_REL --endpoint http://127.0.0.1:$BASE vm list"
    if [ "$MODE" = simulated ]; then
        echo "  $CLI_REL --endpoint http://127.0.0.1:$BASE backup start $(host_name "$HOSTS")/vm-00001 --wait"
        echo "  $CLI_REL --endpoint http://127.0.0.1:$BASE policy apply -f $CLUSTER_DIR/policy-simulated.yaml"
        echo "  $CLI_REL --endpoint http://127.0.0.1:$BASE policy run fleet-scale --watch"
    else
        echo "  $CLI_REL --endpoint http://127.0.0.1:$BASE backup start $(host_name "$HOSTS")/app-1 --wait"
        echo "  $CLI_REL --endpoint http://127.0.0.1:$BASE policy apply -f $CLUSTER_DIR/policy-local.yaml"
        echo "  $CLI_REL --endpoint http://127.0.0.1:$BASE policy run local-nightly --watch"
    fi
    echo "  $CLI_REL --endpoint http://127.0.0.1:$BASE fleet compliance"
    echo "Dashboard: http://127.0.0.1:$((BASE + 1))/dashboard   Stop: deploy/local/cluster.sh down"
}

cmd_down() {
    local t0; t0=$(now_ms)
    local f pid pids=()
    for f in "$CLUSTER_DIR"/silos/*/silo.pid; do
        [ -e "$f" ] || continue
        if pid="$(silo_pid "$f")"; then kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); fi
    done
    if [ ${#pids[@]} -gt 0 ]; then
        local n=0 alive how="SIGTERM"
        while :; do
            alive=0; for pid in "${pids[@]}"; do [ -d "/proc/$pid" ] && alive=1; done
            [ $alive = 0 ] && break
            n=$((n + 1))
            if [ $n -ge 150 ]; then how="SIGKILL after 15 s"; for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done; fi
            [ $n -lt 200 ] || break
            sleep 0.1
        done
        log "silos stopped (${pids[*]}; $how, $(( $(now_ms) - t0 )) ms)"
    fi
    rm -f "$CLUSTER_DIR"/silos/*/silo.pid
    local d h vm
    if [ -d "$LAB_DIR/hosts" ]; then
        for d in "$LAB_DIR"/hosts/*/; do
            [ -d "$d" ] || continue
            h="$(basename "$d")"
            # Each host in parallel: delete its guests (domain, images, console log), then stop and remove the host.
            (
                if lab host.sh status "$h" >/dev/null 2>&1; then
                    for vm in $(virsh -q -c "$(lab host.sh uri "$h")" list --all --name 2>/dev/null || true); do
                        lab vm.sh delete "$h" "$vm" 2>/dev/null || true
                    done
                fi
                lab host.sh clean "$h" 2>/dev/null || true
            ) &
        done
        wait
        log "guests deleted, hosts stopped and removed ($(( $(now_ms) - t0 )) ms)"
    fi
    local pg=""
    if [ -f "$STATE" ]; then
        # shellcheck disable=SC1090
        pg="$(. "$STATE"; echo "$PG_DIR")"
    fi
    [ -n "$pg" ] || pg="$(pg_dir)"
    if [ -d "$pg" ]; then bash "$REPO/tests/infra/postgres.sh" stop "$pg"; log "PostgreSQL stopped and its data removed"; fi
    rm -rf "$CLUSTER_DIR/backups"
    rm -f "$STATE" "$CLUSTER_DIR/policy-local.yaml" "$CLUSTER_DIR/policy-simulated.yaml"
    log "down ($(( $(now_ms) - t0 )) ms); silo logs kept in $CLUSTER_DIR/silos"
}

cmd_status() {
    [ -f "$STATE" ] || { echo "no cluster in $CLUSTER_DIR (deploy/local/cluster.sh up)"; exit 3; }
    . "$STATE"
    MODE="${MODE:-lab}"
    local pgstate=stopped; port_busy "$PG_PORT" && pgstate=running
    echo "PostgreSQL 127.0.0.1:$PG_PORT: $pgstate ($PG_DIR)"
    printf '%-8s %-8s %-16s %-8s %-24s %s\n' HOST LIBVIRT SILO READY GRPC GUESTS
    local i h pid ready libvirt guests up=0
    for i in $(seq 1 "$HOSTS"); do
        h="$(host_name "$i")"
        if [ "$MODE" = simulated ]; then libvirt=simulated
        else libvirt="$(lab host.sh status "$h" 2>/dev/null || true)"; libvirt="${libvirt:-stopped}"; fi
        if pid="$(silo_pid "$CLUSTER_DIR/silos/$h/silo.pid")"; then pid="pid $pid"; up=$((up + 1)); else pid=stopped; fi
        ready="$(curl -fs --max-time 3 "http://127.0.0.1:$((BASE + 1 + 10 * (i - 1)))/health/ready" 2>/dev/null || echo -)"
        if [ "$MODE" = simulated ]; then guests="$VMS VMs vm-00001..."; else guests="$( [ "$libvirt" = running ] && virsh -q -c "$(lab host.sh uri "$h")" list --name 2>/dev/null | tr '\n' ' ' || echo -)"; fi
        printf '%-8s %-8s %-16s %-8s %-24s %s\n' "$h" "$libvirt" "$pid" "$ready" "http://127.0.0.1:$((BASE + 10 * (i - 1)))" "$guests"
    done
    [ "$up" = "$HOSTS" ]
}

cmd="${1:-}"; shift || true
case "$cmd" in
    up) cmd_up "$@" ;;
    down) [ $# -eq 0 ] || usage; cmd_down ;;
    status) [ $# -eq 0 ] || usage; cmd_status ;;
    *) usage ;;
esac
