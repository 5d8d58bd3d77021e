#!/usr/bin/env bash
# Test VMs on a lab host (see host.sh). virsh is used only here: this is test scaffolding.
#
#   vm.sh create HOST VM [--disks "raw:64M qcow2:64M"] [--interval-ms N] [--slots N]
#                        [--print-every N] [--memory MiB] [--label KEY=VALUE]... [--agent] [--no-start]
#        Creates the disk images $LAB_DIR/hosts/HOST/images/VM-vda.raw, VM-vdb.qcow2, ... (in order:
#        vda, vdb, ...), defines a <domain type='qemu'> (TCG) with 128 MiB RAM, 1 vcpu, direct kernel
#        boot of the lab guest (guest-build.sh), the disks as virtio, the serial console written to
#        $LAB_DIR/hosts/HOST/console/VM.log, no network, no graphics, and starts it.
#        A disk spec that is an absolute path uses that existing image in place (format detected),
#        e.g. to boot a restored backup; the guest then resumes counting at its highest seq + 1.
#        A disk spec "clone:FORMAT:/abs/template" makes a linked clone: a new qcow2 VM-vdX.qcow2
#        backed by that existing template (qemu-img create -f qcow2 -b TEMPLATE -F FORMAT); the
#        template is never written or deleted by this script.
#        --agent adds the QEMU guest agent channel (org.qemu.guest_agent.0, a unix socket libvirt
#        places itself); the guest starts qemu-ga on it (guest-build.sh ships it in the initramfs).
#        --label (repeatable) writes the orchestrator's labels into the domain's <metadata> (namespace
#        https://orchestrator.dev/xmlns/labels/1); a key given twice keeps the last value.
#        Re-running on an existing VM only makes sure it runs. Default disks: "raw:64M".
#   vm.sh start HOST VM       start (no-op when running)
#   vm.sh destroy HOST VM     hard stop (no-op when not running)
#   vm.sh undefine HOST VM    destroy + undefine; keeps the images
#   vm.sh delete HOST VM      destroy + undefine + remove the images and the console log
#   vm.sh disks HOST VM       print "TARGET PATH FORMAT" per disk, from the live definition
#   vm.sh console HOST VM     print the console log path
#   vm.sh wait HOST VM [--seq N] [--timeout S]
#        wait until the console shows "orch: seq=K" with K >= N (default 0: the guest writes); exit 1 on timeout
#   vm.sh xml HOST VM         print the domain XML
# Environment: LAB_DIR.
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 3 ] || usage
CMD="$1" HOST="$2" VM="$3"; shift 3
lab_valid_name "$HOST"; lab_valid_name "$VM"
H="$(lab_host_dir "$HOST")"
URI="$(lab_host_uri "$HOST")"
IMAGES="$H/images"
CONSOLE="$H/console/$VM.log"

V() { virsh -q -c "$URI" "$@"; }
exists() { V dominfo "$VM" >/dev/null 2>&1; }
state() { V domstate "$VM" 2>/dev/null | head -n 1; }

check_host() {
    lab_pid_alive "$H/libvirtd.pid" || lab_die "host $HOST is not running: $(lab_daemon_gone "$HOST") (tests/lab/host.sh start $HOST)"
}

do_start() {
    if [ "$(state)" = "running" ]; then lab_log "vm $HOST/$VM: already running"; return 0; fi
    local t0; t0=$(lab_now_ms)
    V start "$VM" >/dev/null
    lab_log "vm $HOST/$VM: started ($(( $(lab_now_ms) - t0 )) ms)"
}

do_destroy() {
    exists || return 0
    if [ "$(state)" = "running" ] || [ "$(state)" = "paused" ]; then
        V destroy "$VM" >/dev/null
        lab_log "vm $HOST/$VM: destroyed"
    fi
}

do_undefine() {
    do_destroy
    if exists; then
        # --snapshots-metadata/--checkpoints-metadata: tests may leave either behind.
        V undefine "$VM" --snapshots-metadata --checkpoints-metadata >/dev/null 2>&1 || V undefine "$VM" >/dev/null
        lab_log "vm $HOST/$VM: undefined"
    fi
}

size_ok() { [[ "$1" =~ ^[0-9]+[KMGkmg]?$ ]]; }

# XML text/attribute escaping for label keys and values.
xml_escape() {
    # sed, not ${s//&/...}: bash 5.2 expands '&' in a pattern substitution's replacement to the match.
    printf '%s' "$1" | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e "s/'/\\&apos;/g" -e 's/"/\&quot;/g'
}

# The <metadata> element with the orchestrator's labels, from "KEY=VALUE" arguments (last value of a key wins).
labels_xml() {
    [ $# -gt 0 ] || return 0
    local -A seen=() ; local -a order=() ; local kv key
    for kv in "$@"; do
        key="${kv%%=*}"
        [ -z "${seen[$key]+x}" ] && order+=("$key")
        seen[$key]="${kv#*=}"
    done
    printf "  <metadata>\n    <orch:labels xmlns:orch='https://orchestrator.dev/xmlns/labels/1'>\n"
    for key in "${order[@]}"; do
        printf "      <orch:label key='%s'>%s</orch:label>\n" "$(xml_escape "$key")" "$(xml_escape "${seen[$key]}")"
    done
    printf "    </orch:labels>\n  </metadata>\n"
}

do_create() {
    local disks="raw:64M" interval=100 slots=64 every=10 mem=128 start=1 agent=""
    local -a labels=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --label)
                [ $# -ge 2 ] || usage
                # keys: a letter or digit, then letters, digits, _ . / -; the value may be empty
                [[ "$2" =~ ^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}=.*$ ]] || lab_die "--label wants KEY=VALUE (key: letters, digits, _ . / -): '$2'"
                labels+=("$2"); shift 2 ;;
            --disks) disks="$2"; shift 2 ;;
            --interval-ms) interval="$2"; shift 2 ;;
            --slots) slots="$2"; shift 2 ;;
            --print-every) every="$2"; shift 2 ;;
            --memory) mem="$2"; shift 2 ;;
            --no-start) start=0; shift ;;
            --agent) agent="    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
"; shift ;;
            *) usage ;;
        esac
    done
    [[ "$interval$slots$every$mem" =~ ^[0-9]+$ ]] || lab_die "numeric options expected"
    [ "$slots" -ge 2 ] && [ "$slots" -le 4096 ] || lab_die "--slots must be 2..4096"
    if exists; then
        lab_log "vm $HOST/$VM: already defined"
        [ $start = 1 ] && do_start
        return 0
    fi
    local G="$LAB_DIR/guest"
    [ -s "$G/vmlinuz" ] && [ -s "$G/initrd.img" ] || lab_die "no lab guest: run tests/lab/guest-build.sh"
    # the uncompressed ELF kernel (PVH entry) boots about twice as fast under TCG
    local kernel="$G/vmlinuz"; [ -s "$G/vmlinux" ] && kernel="$G/vmlinux"
    mkdir -p "$IMAGES" "$H/console"
    local t0; t0=$(lab_now_ms)
    local letters=abcdefghijklmnopqrstuvwxyz i=0 spec fmt size dev path xmld=""
    for spec in $disks; do
        dev="vd${letters:$i:1}"
        if [[ "$spec" == clone:* ]]; then
            # a linked clone over a shared template, as cloud images and VDI pools use them
            local rest="${spec#clone:}"
            local tfmt="${rest%%:*}" template="${rest#*:}"
            [ "$tfmt" = raw ] || [ "$tfmt" = qcow2 ] || lab_die "template format must be raw or qcow2: $spec"
            [[ "$template" == /* ]] && [ -f "$template" ] || lab_die "no such template: $template"
            fmt=qcow2
            path="$IMAGES/$VM-$dev.qcow2"
            rm -f "$path"
            qemu-img create -q -f qcow2 -b "$template" -F "$tfmt" "$path"
        elif [[ "$spec" == /* ]]; then
            # an existing image, used in place (e.g. a restored backup); never deleted by this script
            path="$spec"
            [ -f "$path" ] || lab_die "no such image: $path"
            fmt="$(qemu-img info -U --output=json "$path" | sed -n 's/^ *"format": "\([a-z0-9]*\)".*/\1/p' | head -n 1)"
            [ -n "$fmt" ] || lab_die "cannot read the format of $path"
        else
            fmt="${spec%%:*}"; size="${spec#*:}"
            [ "$fmt" = raw ] || [ "$fmt" = qcow2 ] || lab_die "disk format must be raw or qcow2: $spec"
            size_ok "$size" || lab_die "bad disk size: $spec"
            path="$IMAGES/$VM-$dev.$fmt"
            rm -f "$path"
            qemu-img create -q -f "$fmt" "$path" "$size"
        fi
        xmld+="    <disk type='file' device='disk'>
      <driver name='qemu' type='$fmt'/>
      <source file='$path'/>
      <target dev='$dev' bus='virtio'/>
    </disk>
"
        i=$((i + 1))
    done
    [ $i -ge 1 ] || lab_die "at least one disk"
    : > "$CONSOLE"
    local xml="$H/$VM.xml"
    cat > "$xml" <<XML
<domain type='qemu'>
  <name>$VM</name>
$(labels_xml "${labels[@]}")
  <memory unit='MiB'>$mem</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$kernel</kernel>
    <initrd>$G/initrd.img</initrd>
    <cmdline>console=ttyS0 panic=-1 orch.interval_ms=$interval orch.slots=$slots orch.print_every=$every</cmdline>
  </os>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
$xmld    <serial type='file'>
      <source path='$CONSOLE' append='on'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='$CONSOLE' append='on'/>
      <target type='serial' port='0'/>
    </console>
$agent    <memballoon model='none'/>
  </devices>
</domain>
XML
    V define "$xml" >/dev/null
    lab_log "vm $HOST/$VM: defined with disks '$disks' ($(( $(lab_now_ms) - t0 )) ms)"
    [ $start = 1 ] && do_start
    return 0
}

do_wait() {
    local want=0 tmo=60
    while [ $# -gt 0 ]; do
        case "$1" in
            --seq) want="$2"; shift 2 ;;
            --timeout) tmo="$2"; shift 2 ;;
            *) usage ;;
        esac
    done
    local t0; t0=$(lab_now_ms)
    local deadline=$(( $(date +%s) + tmo )) last
    while :; do
        last="$(grep -a -o 'orch: seq=[0-9]*' "$CONSOLE" 2>/dev/null | tail -n 1 | sed "s/.*=//" || true)"
        if [ -n "$last" ] && [ "$last" -ge "$want" ]; then
            lab_log "vm $HOST/$VM: seq=$last after $(( $(lab_now_ms) - t0 )) ms"
            echo "$last"; return 0
        fi
        if grep -a -q 'orch: ERROR' "$CONSOLE" 2>/dev/null; then lab_die "vm $HOST/$VM: $(grep -a 'orch: ERROR' "$CONSOLE" | tail -n 1)"; fi
        [ "$(date +%s)" -lt "$deadline" ] || { lab_log "vm $HOST/$VM: timeout waiting for seq >= $want (last: ${last:-none})"; return 1; }
        sleep 0.2
    done
}

case "$CMD" in
    create) check_host; do_create "$@" ;;
    start) check_host; do_start ;;
    destroy) check_host; do_destroy ;;
    undefine) check_host; do_undefine ;;
    delete)
        check_host; do_undefine
        # The VM's own images, and any backup overlay a test deliberately left on them.
        rm -f "$IMAGES/$VM"-vd?.raw "$IMAGES/$VM"-vd?.qcow2 "$IMAGES/$VM"-vd?.*.orch-*.qcow2 "$CONSOLE" "$H/$VM.xml"
        lab_log "vm $HOST/$VM: deleted" ;;
    disks)
        check_host
        V domblklist "$VM" --details | awk '$2=="disk"{print $3, $4}' | while read -r t p; do
            echo "$t $p $(qemu-img info -U --output=json "$p" 2>/dev/null | sed -n 's/.*"format": "\([a-z0-9]*\)".*/\1/p' | head -n 1)"
        done ;;
    console) echo "$CONSOLE" ;;
    wait) do_wait "$@" ;;
    xml) check_host; V dumpxml "$VM" ;;
    *) usage ;;
esac
