#!/usr/bin/env bash
# Installs the Debian packages the test lab needs. Idempotent: does nothing when all are present.
# apt always runs with a lock timeout, since other processes may be using apt at the same time.
set -euo pipefail

PKGS=(qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev
      busybox-static cpio xz-utils zstd kmod python3 util-linux procps)

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "lab install: all packages present"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "lab install: missing packages (${missing[*]}) and not root" >&2
    exit 1
fi

echo "lab install: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -o DPkg::Lock::Timeout=300)
"${APT[@]}" update -qq
"${APT[@]}" install -y -qq --no-install-recommends "${missing[@]}"
echo "lab install: done"
