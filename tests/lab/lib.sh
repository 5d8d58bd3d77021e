# shellcheck shell=bash
# Shared helpers for the lab scripts. Source it; do not run it.
# Everything the lab creates lives under $LAB_DIR (default: <repo>/.lab, git-ignored).

LAB_SCRIPTS="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
LAB_REPO="$(readlink -f "$LAB_SCRIPTS/../..")"
LAB_DIR="$(readlink -m "${LAB_DIR:-$LAB_REPO/.lab}")"
export LAB_DIR

lab_log() { echo "lab: $*" >&2; }
lab_die() { echo "lab: ERROR: $*" >&2; exit 1; }

# Milliseconds since the epoch, for the timings the scripts print.
lab_now_ms() { date +%s%3N; }

lab_valid_name() {
    [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$ ]] || lab_die "bad name '$1' (letters, digits, _ . -, max 32)"
}

lab_host_dir() { echo "$LAB_DIR/hosts/$1"; }
lab_host_sock() { echo "$LAB_DIR/hosts/$1/run/libvirt/libvirt-sock"; }
lab_host_uri() { echo "qemu+unix:///system?socket=$(lab_host_sock "$1")"; }

# True when the pid in file $1 is alive and its command line contains $2 (default: the pid file's path,
# which our daemons get with -p, so a recycled pid is never mistaken for them).
lab_pid_alive() {
    local f="$1" want="${2:-$1}" pid
    [ -s "$f" ] || return 1
    pid="$(cat "$f" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$want"
}

# Why daemon $2 (default libvirtd) of host $1 is not running, for error messages. Our scripts stop daemons with
# SIGTERM (they remove their pid file) or remove the file after a SIGKILL; a pid file left behind means the daemon
# died on its own (crashed) or someone else killed it. Adds the kernel's last line for that pid (a segfault), if any.
lab_daemon_gone() {
    local name="$1" daemon="${2:-libvirtd}" f pid k msg
    f="$(lab_host_dir "$name")/$daemon.pid"
    if [ ! -s "$f" ]; then echo "$daemon not started (no pid file)"; return 0; fi
    pid="$(cat "$f" 2>/dev/null || true)"
    msg="$daemon (pid $pid) is gone but its pid file is still there: it crashed or something else killed it"
    k="$(dmesg 2>/dev/null | grep -F " $daemon[$pid]: " | tail -n 1 || true)"
    [ -z "$k" ] || msg="$msg; kernel: ${k#*] }"
    echo "$msg; see $(lab_host_dir "$name")/log/$daemon.log"
}
