#!/usr/bin/env bash
# An independent libvirt "host" on this machine: libvirtd + virtlogd in their own mount namespace with
# private /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt, all kept
# under $LAB_DIR/hosts/NAME (the QEMU capabilities cache is shared by all hosts: $LAB_DIR/cache/libvirt).
# The machine's own libvirt (its config, a libvirtd already running) is left alone.
#
#   host.sh start NAME             start (no-op when running); prints the connection URI on stdout
#   host.sh stop NAME              destroy its VMs, stop its daemons and any process left in its namespace
#   host.sh stop-all               stop every host under $LAB_DIR/hosts
#   host.sh uri NAME               print the connection URI
#   host.sh status NAME            print "running" or "stopped" (exit 0 / 3)
#   host.sh list                   print "NAME running|stopped" for every host
#   host.sh restart-libvirtd NAME  restart only libvirtd inside the host (running VMs survive)
#   host.sh clean NAME             stop, then delete the host's directory (config, domains, images)
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

START_TIMEOUT="${LAB_HOST_START_TIMEOUT:-180}"

host_running() { lab_pid_alive "$(lab_host_dir "$1")/libvirtd.pid"; }
host_answers() { timeout 20 virsh -q -c "$(lab_host_uri "$1")" version >/dev/null 2>&1; }

# Writes the private config of host $1 (always rewritten; domains and other state are kept).
host_prepare() {
    local H="$1"
    mkdir -p "$H/etc" "$H/run/libvirt" "$H/lib" "$H/log" "$H/images" "$H/console" "$LAB_DIR/cache/libvirt"
    # Stock config: the conf files and nwfilter definitions, not the machine's domains or networks.
    local f
    for f in /etc/libvirt/*.conf; do cp -f "$f" "$H/etc/"; done
    if [ -d /etc/libvirt/nwfilter ] && [ ! -d "$H/etc/nwfilter" ]; then cp -r /etc/libvirt/nwfilter "$H/etc/"; fi
    mkdir -p "$H/etc/qemu"
    cat > "$H/etc/libvirtd.conf" <<'CONF'
# lab host: root-only unix socket, no auth (the socket lives under the lab dir)
unix_sock_group = "root"
unix_sock_ro_perms = "0770"
unix_sock_rw_perms = "0770"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
CONF
    cat > "$H/etc/qemu.conf" <<'CONF'
# lab host: QEMU runs as root (without this libvirt re-probes QEMU on almost every call),
# no cgroups (several daemons share the machine), no security driver relabelling.
user = "root"
group = "root"
cgroup_controllers = [ ]
security_driver = "none"
remember_owner = 0
CONF
    cat > "$H/etc/virtlogd.conf" <<'CONF'
log_outputs = "3:file:/var/log/libvirt/virtlogd.log"
CONF
    # Same directory skeleton as the stock /var/lib/libvirt.
    if [ -d /var/lib/libvirt ]; then
        (cd /var/lib/libvirt && find . -mindepth 1 -type d) | while read -r d; do mkdir -p "$H/lib/$d"; done
    fi
}

# The mount points must exist in the machine's namespace.
ensure_mount_points() {
    local d
    for d in /etc/libvirt /run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt; do
        [ -d "$d" ] || mkdir -p "$d"
    done
}

# Runs "$@" inside host $1's mount namespace (entered through virtlogd's or libvirtd's).
in_host_ns() {
    local H; H="$(lab_host_dir "$1")"; shift
    local pid=""
    if lab_pid_alive "$H/virtlogd.pid"; then pid="$(cat "$H/virtlogd.pid")"
    elif lab_pid_alive "$H/libvirtd.pid"; then pid="$(cat "$H/libvirtd.pid")"
    else lab_die "host $(basename "$H") has no daemon running"; fi
    nsenter --mount="/proc/$pid/ns/mnt" -- "$@"
}

start_libvirtd_in_ns() {
    local name="$1" H; H="$(lab_host_dir "$1")"
    rm -f "$H/libvirtd.pid"
    in_host_ns "$name" libvirtd -d -p "$H/libvirtd.pid" </dev/null >>"$H/daemons.out" 2>&1 9>&-
}

wait_answers() {
    local name="$1" t0="$2" deadline=$(( $(date +%s) + START_TIMEOUT ))
    until host_answers "$name"; do
        host_running "$name" || lab_die "host $name: libvirtd died: $(lab_daemon_gone "$name") and daemons.out"
        [ "$(date +%s)" -lt "$deadline" ] || lab_die "host $name: libvirtd did not answer within ${START_TIMEOUT}s"
        sleep 0.2
    done
    lab_log "host $name: answering after $(( $(lab_now_ms) - t0 )) ms"
}

cmd_start() {
    local name="$1"; lab_valid_name "$name"
    local H; H="$(lab_host_dir "$name")"
    local sock; sock="$(lab_host_sock "$name")"
    [ ${#sock} -le 107 ] || lab_die "socket path too long for AF_UNIX (${#sock} > 107): $sock; use a shorter LAB_DIR"
    command -v libvirtd >/dev/null || lab_die "libvirtd not installed: run tests/lab/install.sh"
    mkdir -p "$H"
    exec 9>"$H/.lock"; flock -w 300 9 || lab_die "host $name: lock timeout"
    local t0; t0=$(lab_now_ms)
    if host_running "$name"; then
        if ! lab_pid_alive "$H/virtlogd.pid"; then lab_log "host $name: virtlogd missing; restarting host"; stop_host "$name"
        else
            wait_answers "$name" "$t0"
            lab_host_uri "$name" | tee "$H/uri"
            return 0
        fi
    fi
    stop_host "$name" quiet   # leftovers of a crashed run, if any
    host_prepare "$H"
    ensure_mount_points
    # /run is volatile: a fresh start begins with an empty private /run/libvirt (like a reboot).
    rm -rf "$H/run/libvirt"; mkdir -p "$H/run/libvirt"
    rm -f "$H/libvirtd.pid" "$H/virtlogd.pid"
    H="$H" CACHE="$LAB_DIR/cache/libvirt" unshare --mount --propagation private -- /bin/bash -c '
        set -e
        mount --bind "$H/etc" /etc/libvirt
        mount --bind "$H/run/libvirt" /run/libvirt
        mount --bind "$H/lib" /var/lib/libvirt
        mount --bind "$CACHE" /var/cache/libvirt
        mount --bind "$H/log" /var/log/libvirt
        virtlogd -d -p "$H/virtlogd.pid"
        libvirtd -d -p "$H/libvirtd.pid"
    ' </dev/null >>"$H/daemons.out" 2>&1 9>&-
    local i=0
    until host_running "$name"; do
        i=$((i + 1)); [ $i -lt 100 ] || lab_die "host $name: libvirtd did not start; see $H/daemons.out"
        sleep 0.1
    done
    local ns; ns="$(readlink "/proc/$(cat "$H/libvirtd.pid")/ns/mnt")"
    [ "$ns" != "$(readlink /proc/self/ns/mnt)" ] || lab_die "host $name: libvirtd is not in a private mount namespace"
    wait_answers "$name" "$t0"
    lab_host_uri "$name" | tee "$H/uri"
}

# Pids of every process in host $1's mount namespace(s): those that see this host's private run dir
# (same device and inode) at /run/libvirt. Namespace inode numbers are recycled, so a recorded
# namespace id alone could point at someone else's processes; this fingerprint cannot.
ns_pids() {
    local H; H="$(lab_host_dir "$1")"
    [ -d "$H/run/libvirt" ] || return 0
    local want; want="$(stat -c '%d:%i' "$H/run/libvirt")"
    local self; self="$(readlink /proc/self/ns/mnt)"
    local -A verdict=()
    local p ns pid
    for p in /proc/[0-9]*; do
        pid="${p#/proc/}"
        ns="$(readlink "$p/ns/mnt" 2>/dev/null)" || continue
        [ -n "$ns" ] && [ "$ns" != "$self" ] || continue
        if [ -z "${verdict[$ns]:-}" ]; then
            if [ "$(stat -c '%d:%i' "$p/root"/run/libvirt 2>/dev/null)" = "$want" ]; then verdict[$ns]=yes; else verdict[$ns]=no; fi
        fi
        [ "${verdict[$ns]}" = yes ] && echo "$pid"
    done
    return 0
}

kill_wait() { # signal, timeout-in-tenths, pids...
    local sig="$1" tenths="$2"; shift 2
    [ $# -gt 0 ] || return 0
    kill "-$sig" "$@" 2>/dev/null || true
    local i=0 p alive
    while [ $i -lt "$tenths" ]; do
        alive=0
        for p in "$@"; do [ -d "/proc/$p" ] && alive=1; done
        [ $alive = 0 ] && return 0
        sleep 0.1; i=$((i + 1))
    done
    return 1
}

stop_host() {
    local name="$1" quiet="${2:-}"
    local H; H="$(lab_host_dir "$name")"
    [ -d "$H" ] || return 0
    local t0; t0=$(lab_now_ms)
    local had=0 pids=""
    if host_running "$name"; then
        had=1
        local uri; uri="$(lab_host_uri "$name")"
        local d
        for d in $(timeout 20 virsh -q -c "$uri" list --name 2>/dev/null || true); do
            timeout 20 virsh -q -c "$uri" destroy "$d" >/dev/null 2>&1 &
        done
        wait
        pids="$(cat "$H/libvirtd.pid" 2>/dev/null || true)"
    fi
    if lab_pid_alive "$H/virtlogd.pid"; then
        had=1
        pids="$pids $(cat "$H/virtlogd.pid" 2>/dev/null || true)"
    fi
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill_wait TERM 100 $pids || kill_wait KILL 30 $pids || true
    fi
    local rest; rest="$(ns_pids "$name" | tr '\n' ' ')"
    if [ -n "${rest// /}" ]; then
        had=1
        # shellcheck disable=SC2086
        kill_wait TERM 50 $rest || kill_wait KILL 30 $rest || true
    fi
    rm -f "$H/libvirtd.pid" "$H/virtlogd.pid"
    if [ $had = 1 ]; then
        lab_log "host $name: stopped ($(( $(lab_now_ms) - t0 )) ms)"
    elif [ -z "$quiet" ]; then
        lab_log "host $name: not running"
    fi
}

cmd_stop() {
    local name="$1"; lab_valid_name "$name"
    local H; H="$(lab_host_dir "$name")"
    [ -d "$H" ] || { lab_log "host $name: does not exist"; return 0; }
    exec 9>"$H/.lock"; flock -w 300 9 || lab_die "host $name: lock timeout"
    stop_host "$name"
}

cmd_stop_all() {
    [ -d "$LAB_DIR/hosts" ] || return 0
    local d
    for d in "$LAB_DIR/hosts"/*/; do
        [ -d "$d" ] || continue
        ( cmd_stop "$(basename "$d")" ) &
    done
    wait
}

cmd_restart_libvirtd() {
    local name="$1"; lab_valid_name "$name"
    local H; H="$(lab_host_dir "$name")"
    exec 9>"$H/.lock"; flock -w 300 9 || lab_die "host $name: lock timeout"
    lab_pid_alive "$H/virtlogd.pid" || lab_die "host $name is not running: $(lab_daemon_gone "$name" virtlogd)"
    local t0; t0=$(lab_now_ms)
    if host_running "$name"; then
        kill_wait TERM 100 "$(cat "$H/libvirtd.pid")" || kill_wait KILL 30 "$(cat "$H/libvirtd.pid")" || true
    fi
    start_libvirtd_in_ns "$name"
    wait_answers "$name" "$t0"
}

cmd="${1:-}"; shift || true
case "$cmd" in
    start) [ $# -eq 1 ] || usage; cmd_start "$1" ;;
    stop) [ $# -eq 1 ] || usage; cmd_stop "$1" ;;
    stop-all) cmd_stop_all ;;
    uri) [ $# -eq 1 ] || usage; lab_valid_name "$1"; lab_host_uri "$1" ;;
    status) [ $# -eq 1 ] || usage; lab_valid_name "$1"; if host_running "$1"; then echo running; else echo stopped; exit 3; fi ;;
    list)
        for d in "$LAB_DIR/hosts"/*/; do
            [ -d "$d" ] || continue
            n="$(basename "$d")"; if host_running "$n"; then echo "$n running"; else echo "$n stopped"; fi
        done ;;
    restart-libvirtd) [ $# -eq 1 ] || usage; cmd_restart_libvirtd "$1" ;;
    clean)
        [ $# -eq 1 ] || usage; lab_valid_name "$1"
        ( cmd_stop "$1" )
        rm -rf "$(lab_host_dir "$1")"; lab_log "host $1: removed" ;;
    *) usage ;;
esac
