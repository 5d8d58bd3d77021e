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
