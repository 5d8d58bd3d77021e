#!/usr/bin/env bash
# Builds the lab test guest into $LAB_DIR/guest/:
#   vmlinuz         Debian kernel (linux-image-<ver>-amd64, the one linux-image-amd64 points at)
#   vmlinux         the same kernel uncompressed (ELF, PVH entry), when the kernel has CONFIG_PVH=y:
#                   QEMU boots it directly, skipping the in-guest decompression, which halves the
#                   boot time under TCG. vm.sh uses it when present.
#   initrd.img      busybox-static initramfs whose /init (guest-init.sh) writes the counter records;
#                   it also carries qemu-ga (Debian's qemu-guest-agent, with the libraries it links) and
#                   virtio_console, so a VM defined with the agent channel answers guest-ping/guest-exec
#   kernel.version  the kernel version string
# Cached: does nothing when the outputs exist and were built by this same script + init.
# Options: --force  rebuild even when cached.
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"

FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

OUT="$LAB_DIR/guest"
mkdir -p "$OUT/cache"
exec 9>"$OUT/.lock"
flock -w 600 9 || lab_die "guest-build: lock timeout"

STAMP="$(cat "$LAB_SCRIPTS/guest-build.sh" "$LAB_SCRIPTS/guest-init.sh" | sha256sum | cut -c1-16)"
if [ $FORCE = 0 ] && [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.img" ] && \
   [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$STAMP" ]; then
    lab_log "guest-build: cached ($(cat "$OUT/kernel.version"))"
    exit 0
fi
t0=$(lab_now_ms)

BUSYBOX=/bin/busybox
[ -x $BUSYBOX ] || lab_die "no $BUSYBOX: run tests/lab/install.sh"
if ldd $BUSYBOX >/dev/null 2>&1; then lab_die "$BUSYBOX is not static: install busybox-static"; fi

# The kernel package apt offers through the linux-image-amd64 meta-package.
kpkg() { apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n 1; }
KPKG="$(kpkg)"
if [ -z "$KPKG" ]; then
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    KPKG="$(kpkg)"
fi
[ -n "$KPKG" ] || lab_die "guest-build: apt offers no linux-image-amd64"
KVER="${KPKG#linux-image-}"

DEB="$(ls "$OUT/cache/${KPKG}_"*.deb 2>/dev/null | head -n 1 || true)"
if [ -z "$DEB" ]; then
    lab_log "guest-build: downloading $KPKG"
    (cd "$OUT/cache" && apt-get download -qq "$KPKG" 2>&1 | grep -v "^W: Download is performed unsandboxed" >&2) || true
    DEB="$(ls "$OUT/cache/${KPKG}_"*.deb 2>/dev/null | head -n 1 || true)"
    [ -n "$DEB" ] || lab_die "guest-build: apt-get download $KPKG failed"
fi
t1=$(lab_now_ms)

TMP="$OUT/build.tmp"
rm -rf "$TMP"
mkdir -p "$TMP/deb" "$TMP/root"
trap 'rm -rf "$TMP"' EXIT
dpkg -x "$DEB" "$TMP/deb"
KMOD="$TMP/deb/lib/modules/$KVER"
[ -f "$TMP/deb/boot/vmlinuz-$KVER" ] || lab_die "no vmlinuz-$KVER in $DEB"
[ -d "$KMOD" ] || lab_die "no modules for $KVER in $DEB"

# Resolve the load order of the virtio block modules and their dependencies (depth first).
declare -A SEEN=()
ORDER=()
modfile() { find "$KMOD" -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" -o -name "$1.ko.gz" | head -n 1; }
resolve() {
    local m="$1" f d
    [ -n "${SEEN[$m]:-}" ] && return 0
    SEEN[$m]=1
    f="$(modfile "$m")"
    [ -n "$f" ] || { lab_log "guest-build: module $m not found (built in?)"; return 0; }
    for d in $(modinfo -F depends "$f" | tr ',' ' '); do resolve "${d//-/_}"; done
    ORDER+=("$m")
}
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk virtio_console; do resolve "$m"; done

# The QEMU guest agent, from Debian's package (same release as the host, so the host's copies of the
# libraries it links are the right ones).
QGA_DEB="$(ls "$OUT/cache/qemu-guest-agent_"*.deb 2>/dev/null | head -n 1 || true)"
if [ -z "$QGA_DEB" ]; then
    lab_log "guest-build: downloading qemu-guest-agent"
    (cd "$OUT/cache" && apt-get download -qq qemu-guest-agent 2>&1 | grep -v "^W: Download is performed unsandboxed" >&2) || true
    QGA_DEB="$(ls "$OUT/cache/qemu-guest-agent_"*.deb 2>/dev/null | head -n 1 || true)"
    [ -n "$QGA_DEB" ] || lab_die "guest-build: apt-get download qemu-guest-agent failed"
fi
mkdir -p "$TMP/qga"
dpkg -x "$QGA_DEB" "$TMP/qga"
[ -x "$TMP/qga/usr/sbin/qemu-ga" ] || lab_die "no usr/sbin/qemu-ga in $QGA_DEB"

R="$TMP/root"
mkdir -p "$R/bin" "$R/lib/modules" "$R/proc" "$R/sys" "$R/dev" "$R/tmp"
cp "$BUSYBOX" "$R/bin/busybox"
for m in "${ORDER[@]}"; do
    f="$(modfile "$m")"
    # busybox insmod cannot load compressed modules: store them uncompressed.
    case "$f" in
        *.ko.xz)  xz -dc "$f" > "$R/lib/modules/$m.ko" ;;
        *.ko.zst) zstd -qdc "$f" > "$R/lib/modules/$m.ko" ;;
        *.ko.gz)  gzip -dc "$f" > "$R/lib/modules/$m.ko" ;;
        *)        cp "$f" "$R/lib/modules/$m.ko" ;;
    esac
done
printf '%s\n' "${ORDER[@]}" > "$R/lib/modules/load-order"
cp "$TMP/qga/usr/sbin/qemu-ga" "$R/bin/qemu-ga"
for lib in $(ldd "$TMP/qga/usr/sbin/qemu-ga" | grep -o '/[^ ]*'); do
    mkdir -p "$R$(dirname "$lib")"
    cp -L "$lib" "$R$lib"
done
install -m 0755 "$LAB_SCRIPTS/guest-init.sh" "$R/init"
(cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -9) > "$OUT/initrd.img.tmp"
cp "$TMP/deb/boot/vmlinuz-$KVER" "$OUT/vmlinuz.tmp"
rm -f "$OUT/vmlinux"
if grep -q '^CONFIG_PVH=y' "$TMP/deb/boot/config-$KVER" 2>/dev/null; then
    python3 - "$OUT/vmlinuz.tmp" "$OUT/vmlinux.tmp" <<'PY' || { lab_log "guest-build: cannot extract vmlinux; using vmlinuz"; rm -f "$OUT/vmlinux.tmp"; }
import lzma, subprocess, sys, zlib
data = open(sys.argv[1], "rb").read()
out = None
i = data.find(b"\xfd7zXZ\x00")
if i >= 0:
    out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[i:])
elif data.find(b"\x28\xb5\x2f\xfd") >= 0:
    i = data.find(b"\x28\xb5\x2f\xfd")
    out = subprocess.run(["zstd", "-qdc"], input=data[i:], stdout=subprocess.PIPE).stdout
elif data.find(b"\x1f\x8b\x08") >= 0:
    i = data.find(b"\x1f\x8b\x08")
    out = zlib.decompressobj(31).decompress(data[i:])
if not out or out[:4] != b"\x7fELF":
    sys.exit("no ELF kernel inside")
open(sys.argv[2], "wb").write(out)
PY
fi
mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
[ -f "$OUT/vmlinux.tmp" ] && mv "$OUT/vmlinux.tmp" "$OUT/vmlinux"
echo "$KVER" > "$OUT/kernel.version"
echo "$STAMP" > "$OUT/stamp"
t2=$(lab_now_ms)
lab_log "guest-build: built kernel $KVER$([ -f "$OUT/vmlinux" ] && echo ' (+ uncompressed vmlinux)'), modules: ${ORDER[*]} (download $((t1 - t0)) ms, build $((t2 - t1)) ms)"
