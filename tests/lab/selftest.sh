#!/usr/bin/env bash
# End-to-end check of the lab, with timings: install, guest build, two hosts started at once,
# a VM with a raw and a qcow2 disk writing its counter, a live backup by hand with virsh
# (disk-only atomic snapshot, copy the bases, active block commit with pivot) checked consistent,
# and spliced live copies checked NOT consistent. Removes its own hosts at the end (--keep: leave them).
# Prints "selftest: N passed, N failed" last; exit 0 when nothing failed.
# Environment: LAB_DIR; LAB_SELFTEST_PREFIX (host name prefix, default "selftest").
set -euo pipefail
HERE="$(dirname "$(readlink -f "$0")")"
. "$HERE/lib.sh"

KEEP=0; [ "${1:-}" = "--keep" ] && KEEP=1
P="${LAB_SELFTEST_PREFIX:-selftest}"
HA="$P-a" HB="$P-b" VM=vm1 VM2=vm2
PASS=0 FAIL=0
ok() { PASS=$((PASS + 1)); echo "PASS: $*"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL: $*"; }
declare -a TIMES=()
timed() { # label, command...
    local label="$1"; shift
    local t0 rc=0; t0=$(lab_now_ms)
    "$@" || rc=$?
    TIMES+=("$label: $(( $(lab_now_ms) - t0 )) ms")
    return $rc
}
cleanup() {
    if [ $KEEP = 0 ]; then
        "$HERE/host.sh" clean "$HA" >/dev/null 2>&1 || true
        "$HERE/host.sh" clean "$HB" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

timed "install.sh" "$HERE/install.sh" >/dev/null
timed "guest-build.sh" "$HERE/guest-build.sh"

# Two hosts at once, from a clean state.
"$HERE/host.sh" clean "$HA" >/dev/null 2>&1; "$HERE/host.sh" clean "$HB" >/dev/null 2>&1
t0=$(lab_now_ms)
"$HERE/host.sh" start "$HA" > "$LAB_DIR/$P-a.uri" &
pa=$!
"$HERE/host.sh" start "$HB" > "$LAB_DIR/$P-b.uri" &
pb=$!
if wait $pa && wait $pb; then ok "two hosts started at once"; else bad "host start"; exit 1; fi
TIMES+=("start 2 hosts in parallel: $(( $(lab_now_ms) - t0 )) ms")
UA="$(cat "$LAB_DIR/$P-a.uri")" UB="$(cat "$LAB_DIR/$P-b.uri")"
[ "$UA" = "$("$HERE/host.sh" uri "$HA")" ] && ok "uri printed" || bad "uri mismatch"
timed "restart host (already running)" "$HERE/host.sh" start "$HA" >/dev/null

timed "vm create+start (raw:64M qcow2:64M)" "$HERE/vm.sh" create "$HA" "$VM" --disks "raw:64M qcow2:64M" --interval-ms 100
timed "vm create+start on 2nd host (raw:16M)" "$HERE/vm.sh" create "$HB" "$VM2" --disks "raw:16M" --interval-ms 100
timed "boot to first counter record" "$HERE/vm.sh" wait "$HA" "$VM" --seq 0 --timeout 120 >/dev/null \
    && ok "guest writes its counter" || { bad "guest did not write"; tail -30 "$("$HERE/vm.sh" console "$HA" "$VM")"; exit 1; }
s1="$("$HERE/vm.sh" wait "$HA" "$VM" --seq 0 2>/dev/null)"
sleep 3
s2="$("$HERE/vm.sh" wait "$HA" "$VM" --seq $((s1 + 10)) --timeout 60 2>/dev/null || echo 0)"
[ "$s2" -gt "$s1" ] && ok "console counter increases ($s1 -> $s2)" || bad "counter did not increase ($s1 -> $s2)"
"$HERE/vm.sh" wait "$HB" "$VM2" --seq 10 --timeout 120 >/dev/null && ok "VM on 2nd host writes" || bad "VM on 2nd host"
[ "$(virsh -q -c "$UA" list --name | xargs)" = "$VM" ] && [ "$(virsh -q -c "$UB" list --name | xargs)" = "$VM2" ] \
    && ok "hosts are independent (each lists only its own VM)" || bad "host isolation"
# Wait until the ring has wrapped once so the checks below see a full ring.
"$HERE/vm.sh" wait "$HA" "$VM" --seq 70 --timeout 120 >/dev/null || true

# Live backup by hand.
I="$LAB_DIR/hosts/$HA/images" B="$LAB_DIR/$P-backup"
rm -rf "$B"; mkdir -p "$B"
rm -f "$I/$VM-vda.ovl.qcow2" "$I/$VM-vdb.ovl.qcow2"
timed "backup: snapshot-create-as --disk-only --atomic (2 disks)" virsh -q -c "$UA" snapshot-create-as "$VM" --disk-only --atomic --no-metadata \
    --diskspec "vda,file=$I/$VM-vda.ovl.qcow2" --diskspec "vdb,file=$I/$VM-vdb.ovl.qcow2" >/dev/null
timed "backup: cp --sparse=always of both bases" cp --sparse=always "$I/$VM-vda.raw" "$I/$VM-vdb.qcow2" "$B/"
timed "backup: blockcommit vda --active --pivot --wait" virsh -q -c "$UA" blockcommit "$VM" vda --active --pivot --wait >/dev/null
timed "backup: blockcommit vdb --active --pivot --wait" virsh -q -c "$UA" blockcommit "$VM" vdb --active --pivot --wait >/dev/null
rm -f "$I/$VM-vda.ovl.qcow2" "$I/$VM-vdb.ovl.qcow2"
[ "$(virsh -q -c "$UA" domblklist "$VM" | awk '{print $2}' | xargs)" = "$I/$VM-vda.raw $I/$VM-vdb.qcow2" ] \
    && ok "VM back on its own disks after pivot" || bad "VM disks after pivot: $(virsh -q -c "$UA" domblklist "$VM")"
[ "$(virsh -q -c "$UA" domstate "$VM")" = running ] && ok "VM still running" || bad "VM not running after backup"
out="$(timed "counter-check of the 2-disk backup" "$HERE/counter-check" "$B/$VM-vda.raw" "$B/$VM-vdb.qcow2")" \
    && ok "backup set is consistent: $out" || bad "backup set not consistent: $out"
qemu-img check -q "$B/$VM-vdb.qcow2" && ok "qemu-img check of the qcow2 copy" || bad "qemu-img check"

# The guest keeps writing after the backup.
s3="$("$HERE/vm.sh" wait "$HA" "$VM" --seq 0 2>/dev/null)"
"$HERE/vm.sh" wait "$HA" "$VM" --seq $((s3 + 10)) --timeout 60 >/dev/null && ok "guest still writes after the backup" || bad "guest stopped writing"

# Torn inputs: two plain copies of the running raw disk taken at different times, spliced.
cp "$I/$VM-vda.raw" "$B/live1.raw"
"$HERE/vm.sh" wait "$HA" "$VM" --seq $((s3 + 20)) --timeout 60 >/dev/null || true
cp "$I/$VM-vda.raw" "$B/live2.raw"
# first 4 KiB block that differs between the two copies
blk="$(cmp "$B/live1.raw" "$B/live2.raw" | awk '{print $5}' | tr -d , || true)"
if [ -z "$blk" ]; then bad "live copies do not differ"; else
    blk=$(( (blk - 1) / 4096 ))
    # (a) splice at a record boundary: records from two moments -> seq gap
    { head -c $(( (blk + 1) * 4096 )) "$B/live1.raw"; tail -c +$(( (blk + 1) * 4096 + 1 )) "$B/live2.raw"; } > "$B/splice-gap.raw"
    # (b) splice inside a record: first half of the record from one copy, second half from the other
    { head -c $(( blk * 4096 + 2048 )) "$B/live1.raw"; tail -c +$(( blk * 4096 + 2048 + 1 )) "$B/live2.raw"; } > "$B/splice-torn.raw"
    if out="$("$HERE/counter-check" "$B/splice-gap.raw")"; then bad "gap splice judged consistent: $out"; else ok "gap splice is inconsistent: $out"; fi
    if out="$("$HERE/counter-check" "$B/splice-torn.raw")"; then bad "torn splice judged consistent: $out"; else
        echo "$out" | grep -q '"torn": [1-9]' && ok "torn splice is inconsistent with torn >= 1: $out" || bad "torn splice not counted torn: $out"; fi
fi
# Disks of two different moments: vdb from the backup, vda copied live later (each alone is fine).
if out="$("$HERE/counter-check" "$B/live2.raw" "$B/$VM-vdb.qcow2")"; then bad "mixed-time set judged consistent: $out"; else ok "mixed-time disk set is inconsistent: $out"; fi

# Restore: boot the backup copies as a new VM on the second host; the guest resumes after the backup's max seq.
cp --sparse=always "$B/$VM-vda.raw" "$B/restore-vda.raw"; cp --sparse=always "$B/$VM-vdb.qcow2" "$B/restore-vdb.qcow2"
bmax="$("$HERE/counter-check" "$B/restore-vda.raw" "$B/restore-vdb.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["max"])')"
timed "restore: create+start VM on the backup copies (2nd host)" "$HERE/vm.sh" create "$HB" restored --disks "$B/restore-vda.raw $B/restore-vdb.qcow2"
RL="$("$HERE/vm.sh" console "$HB" restored)"
timed "restore: boot to first counter record" "$HERE/vm.sh" wait "$HB" restored --seq 0 --timeout 120 >/dev/null || true
rstart="$(grep -a -o 'orch: start seq=[0-9]*' "$RL" | head -n 1 | sed 's/.*=//')"
[ "$rstart" = "$((bmax + 1))" ] && ok "restored guest resumes at backup max + 1 ($rstart)" || bad "restored guest starts at '$rstart', backup max $bmax"

# Teardown.
if [ $KEEP = 0 ]; then
    pids_before=""
    for f in "$LAB_DIR/hosts/$HA/libvirtd.pid" "$LAB_DIR/hosts/$HB/libvirtd.pid" "$LAB_DIR/hosts/$HA/virtlogd.pid" \
             "$LAB_DIR/hosts/$HB/virtlogd.pid" "$LAB_DIR/hosts/$HA/run/libvirt/qemu/$VM.pid" "$LAB_DIR/hosts/$HB/run/libvirt/qemu/$VM2.pid" "$LAB_DIR/hosts/$HB/run/libvirt/qemu/restored.pid"; do
        [ -s "$f" ] && pids_before="$pids_before $(cat "$f")"
    done
    t0=$(lab_now_ms)
    "$HERE/host.sh" stop "$HA" & sa=$!
    "$HERE/host.sh" stop "$HB" & sb=$!
    wait $sa; wait $sb
    TIMES+=("stop 2 hosts in parallel (destroying 1 VM each): $(( $(lab_now_ms) - t0 )) ms")
    left=""; for p in $pids_before; do [ -d "/proc/$p" ] && left="$left $p"; done
    [ -z "$left" ] && ok "no lab process left (pids$pids_before gone)" || bad "processes left:$left"
    rm -rf "$B" "$LAB_DIR/$P-a.uri" "$LAB_DIR/$P-b.uri"
fi

echo "timings:"
for t in "${TIMES[@]}"; do echo "  $t"; done
echo "selftest: $PASS passed, $FAIL failed"
[ $FAIL = 0 ]
