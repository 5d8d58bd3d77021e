#!/bin/busybox sh
# /init of the lab test guest (busybox-static initramfs). Built into the initrd by guest-build.sh.
#
# Writes an incrementing counter record, in lockstep, to every virtio disk (/dev/vda, /dev/vdb, ...):
# for each seq it writes the record to vda, then vdb, ... with O_DIRECT, then sleeps.
# Record: 4096 bytes at byte offset (seq % SLOTS) * 4096 (a ring of SLOTS slots at the disk start).
#   sectors 0..6: "ORCHREC1 disk=vdX seq=<16 digits> slot=<6 digits> slots=<6 digits> part=<p>"
#                 padded with spaces to 511 bytes + "\n"
#   sector 7:     the same header line (part=7) padded to 447 bytes + "\n" (448 bytes), then
#                 "chk=<8 hex>" padded with spaces to 63 bytes + "\n" (64 bytes), where chk is
#                 FNV-1a-32 over the 4 numbers (disk index a=0.., seq, slot, slots), each folded in
#                 as a whole 64-bit value: h=0x811c9dc5; for v: h=((h^v)*0x01000193) & 0xffffffff.
#                 The whole 4096 bytes are a pure function of (disk, seq, slot, slots): a reader
#                 regenerates the expected record from sector 0's header and compares every byte.
#                 (Computed in shell arithmetic: no fork for a checksum tool, which costs CPU under TCG.)
# Kernel command line: orch.interval_ms=N (default 100), orch.slots=N (default 64),
#                      orch.print_every=N (default 10: print "orch: seq=N" every N records).
# At boot it resumes at (highest seq found on any disk) + 1, so a restored image keeps counting.

/bin/busybox mkdir -p /proc /sys /dev /tmp /bin
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1

log() { read -r up _ < /proc/uptime; echo "orch: $* t=$up"; }
halt_forever() { log "ERROR: $*"; while :; do sleep 3600; done; }

log "init start, kernel $(uname -r)"

INTERVAL_MS=100
SLOTS=64
PRINT_EVERY=10
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        orch.interval_ms=*) INTERVAL_MS="${arg#*=}" ;;
        orch.slots=*) SLOTS="${arg#*=}" ;;
        orch.print_every=*) PRINT_EVERY="${arg#*=}" ;;
    esac
done

for m in $(cat /lib/modules/load-order); do
    insmod "/lib/modules/$m.ko" || log "insmod $m failed"
done
log "modules loaded"

# The QEMU guest agent on its virtio-serial port, when the VM has the channel (org.qemu.guest_agent.0).
start_agent() {
    local i=0 p
    while [ $i -lt 30 ]; do
        for p in /sys/class/virtio-ports/*; do
            [ -f "$p/name" ] || continue
            if [ "$(cat "$p/name")" = "org.qemu.guest_agent.0" ]; then
                mkdir -p /var/run /run
                qemu-ga -m virtio-serial -p "/dev/${p##*/}" -t /tmp -f /tmp/qemu-ga.pid </dev/null >/dev/null 2>&1 &
                log "guest agent started on /dev/${p##*/}"
                return 0
            fi
        done
        usleep 100000; i=$((i + 1))
    done
}
start_agent &

i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do usleep 100000; i=$((i + 1)); done
[ -b /dev/vda ] || halt_forever "no /dev/vda"
usleep 200000
DISKS=""
for d in a b c d e f g h i j k l m n o p q r s t u v w x y z; do
    [ -b "/dev/vd$d" ] && DISKS="$DISKS vd$d"
done
log "disks:$DISKS"
n=0
for d in a b c d e f g h i j k l m n o p q r s t u v w x y z; do eval "DIDX_vd$d=$n"; n=$((n + 1)); done

# Resume after the highest seq already on any disk.
START=0
for d in $DISKS; do
    m=$(dd if=/dev/$d bs=4096 count=$SLOTS iflag=direct 2>/dev/null \
        | grep -a -o 'ORCHREC1 disk=[a-z]* seq=[0-9]*' \
        | sed -n 's/.*seq=0*\([0-9][0-9]*\)$/\1/p' | sort -n | tail -n 1)
    if [ -n "$m" ] && [ "$m" -ge "$START" ]; then START=$((m + 1)); fi
done
log "start seq=$START interval_ms=$INTERVAL_MS slots=$SLOTS"

# Header line is fixed-width (70 chars); padding strings are computed once.
PAD441=$(printf '%441s' '')
PAD377=$(printf '%377s' '')
PAD51=$(printf '%51s' '')
HDR='ORCHREC1 disk=%s seq=%016d slot=%06d slots=%06d part=%d'
SLEEP_US=$((INTERVAL_MS * 1000))

seq=$START
while :; do
    slot=$((seq % SLOTS))
    for d in $DISKS; do
        {
            for p in 0 1 2 3 4 5 6; do
                printf "$HDR%s\n" "$d" "$seq" "$slot" "$SLOTS" "$p" "$PAD441"
            done
            printf "$HDR%s\n" "$d" "$seq" "$slot" "$SLOTS" 7 "$PAD377"
        } > /tmp/rec
        di=0; eval "di=\$DIDX_$d"
        h=2166136261
        for v in $di $seq $slot $SLOTS; do h=$(( ((h ^ v) * 16777619) & 4294967295 )); done
        printf 'chk=%08x%s\n' "$h" "$PAD51" >> /tmp/rec
        dd if=/tmp/rec of=/dev/$d bs=4096 count=1 seek=$slot oflag=direct conv=notrunc 2>/dev/null \
            || log "write seq=$seq to $d failed"
    done
    if [ $((seq % PRINT_EVERY)) -eq 0 ]; then log "seq=$seq"; fi
    seq=$((seq + 1))
    usleep $SLEEP_US
done
