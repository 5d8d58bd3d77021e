#!/usr/bin/env bash
# Installs the Orchestrator silo as a systemd service on this host (run as root):
#   /opt/orchestrator/silo/                       the published silo (framework-dependent; needs the .NET 10 runtime)
#   /etc/systemd/system/orchestrator-silo.service the unit, and orchestrator-silo.service.d/10-install.conf
#                                                 (service user, extra writable paths)
#   /etc/orchestrator/orchestrator.env            the settings (kept when it exists), 0640 root:GROUP
#   /etc/orchestrator/tls/                        for the TLS files, 0750 root:GROUP
#   /var/lib/orchestrator/                        state (SQLite in embedded mode), 0750 USER:GROUP
#   BACKUP_ROOT (/var/backups/vms)                backups, 0750 USER:GROUP
#
#   deploy/systemd/install.sh [--root DIR] [--silo-dir DIR] [--user NAME [--create-user]] [--host-name NAME]
#                             [--libvirt-uri URI] [--backup-root DIR] [--no-reload]
#
# --root DIR     install below DIR instead of / (for packaging and tests); implies --no-reload
# --silo-dir DIR an already published silo (the directory holding Orchestrator.Silo.dll); default: publish
#                silo/Orchestrator.Silo of this repository in Release
# --user NAME    the service's user and group (default root: reading VM images owned by libvirt-qemu needs it);
#                another user also gets the libvirt and kvm groups; --create-user makes it (a system user) if missing
# --host-name, --libvirt-uri, --backup-root   written into a new env file (default: `hostname -s`, qemu:///system,
#                /var/backups/vms); an existing env file is never changed
# --no-reload    do not run systemctl daemon-reload
set -euo pipefail
here=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
repo=$(cd "$here/../.." && pwd)

root=/
silo_dir=
user=root
create_user=0
host_name=
libvirt_uri=qemu:///system
backup_root=/var/backups/vms
reload=1

die() { echo "install.sh: $*" >&2; exit 2; }
need_value() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root) need_value "$@"; root=$2; shift ;;
    --silo-dir) need_value "$@"; silo_dir=$2; shift ;;
    --user) need_value "$@"; user=$2; shift ;;
    --create-user) create_user=1 ;;
    --host-name) need_value "$@"; host_name=$2; shift ;;
    --libvirt-uri) need_value "$@"; libvirt_uri=$2; shift ;;
    --backup-root) need_value "$@"; backup_root=$2; shift ;;
    --no-reload) reload=0 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done

[ "$(id -u)" = 0 ] || die "run as root (it creates users, directories owned by them, and a systemd unit)"
case "$root" in /*) ;; *) die "--root must be an absolute path: $root" ;; esac
case "$backup_root" in /*) ;; *) die "--backup-root must be an absolute path: $backup_root" ;; esac
[[ "$user" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "--user: '$user' is not a valid user name"
[ -z "$host_name" ] && host_name=$(hostname -s)
[[ "$host_name" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$ ]] || die "--host-name: '$host_name' is not a valid host name"
[[ "$libvirt_uri" =~ ^[A-Za-z0-9+.-]+:// ]] || die "--libvirt-uri: '$libvirt_uri' is not a URI"
root=${root%/}
[ "$root" = "" ] || reload=0

# The service user: root, or a user that exists (or that --create-user makes, on this system only).
if [ "$user" != root ] && ! id -u "$user" >/dev/null 2>&1; then
  [ "$create_user" = 1 ] || die "--user: no user '$user' on this system (add --create-user to make it)"
  [ "$root" = "" ] || die "--create-user works on this system only, not with --root"
  useradd --system --user-group --home-dir /var/lib/orchestrator --no-create-home --shell /usr/sbin/nologin "$user"
  echo "created system user and group $user"
fi
group=$(id -gn "$user")
extra_groups=()
if [ "$user" != root ]; then
  for g in libvirt kvm; do
    if getent group "$g" >/dev/null; then extra_groups+=("$g"); fi
  done
fi

# The published silo.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -z "$silo_dir" ]; then
  command -v dotnet >/dev/null || die "dotnet not found: install the .NET 10 SDK to publish, or pass --silo-dir"
  echo "publishing the silo (Release) ..."
  dotnet publish "$repo/silo/Orchestrator.Silo" -c Release -o "$tmp/publish" -nologo -v quiet >&2
  silo_dir=$tmp/publish
fi
[ -f "$silo_dir/Orchestrator.Silo.dll" ] || die "--silo-dir: $silo_dir holds no Orchestrator.Silo.dll (publish it first)"
[ -x "$silo_dir/Orchestrator.Silo" ] || die "--silo-dir: $silo_dir holds no executable Orchestrator.Silo (publish with the app host, the default on Linux)"

opt=$root/opt/orchestrator
etc=$root/etc/orchestrator
units=$root/etc/systemd/system
state=$root/var/lib/orchestrator
backups=$root$backup_root

install -d -m 0755 "$opt" "$units" "$units/orchestrator-silo.service.d"
# Replace the silo as a whole (no file of an older version left beside the new ones); a running service keeps
# its open files until it is restarted.
rm -rf "$opt/silo.new"
cp -a "$silo_dir/." "$opt/silo.new/"
find "$opt/silo.new" -name '*.pdb' -delete
chown -R root:root "$opt/silo.new"
chmod -R u=rwX,go=rX "$opt/silo.new"
if [ -d "$opt/silo" ]; then mv "$opt/silo" "$opt/silo.old"; fi
mv "$opt/silo.new" "$opt/silo"
rm -rf "$opt/silo.old"
install -m 0644 "$repo/README.md" "$opt/README.md"

install -d -m 0750 -o root -g "$group" "$etc" "$etc/tls"
install -d -m 0750 -o "$user" -g "$group" "$state" "$backups"

install -m 0644 "$here/orchestrator-silo.service" "$units/orchestrator-silo.service"
{
  echo "# Written by deploy/systemd/install.sh; rewritten on every install (put your own changes in another file)."
  echo "[Service]"
  echo "User=$user"
  echo "Group=$group"
  if [ ${#extra_groups[@]} -gt 0 ]; then echo "SupplementaryGroups=${extra_groups[*]}"; fi
  if [ "$backup_root" != /var/backups/vms ]; then echo "ReadWritePaths=$backup_root"; fi
} > "$units/orchestrator-silo.service.d/10-install.conf"
chmod 0644 "$units/orchestrator-silo.service.d/10-install.conf"

env_file=$etc/orchestrator.env
if [ -e "$env_file" ]; then
  echo "kept $env_file (it exists; compare with $here/orchestrator.env for new settings)"
else
  set_env() { # KEY VALUE: replaces the line KEY=... of the template (sed-safe: | and & and \ escaped)
    local value=${2//\\/\\\\}; value=${value//|/\\|}; value=${value//&/\\&}
    sed -i "s|^$1=.*|$1=$value|" "$tmp/env"
  }
  cp "$here/orchestrator.env" "$tmp/env"
  set_env Orchestrator__Host__Name "$host_name"
  set_env Orchestrator__Host__Uri "$libvirt_uri"
  set_env Orchestrator__Backup__Roots__0 "$backup_root"
  set_env Orchestrator__Backup__DefaultTarget "$backup_root"
  dotnet_path=$(command -v dotnet || true)
  if [ -n "$dotnet_path" ]; then
    printf '\n# Where the .NET runtime is (found by install.sh).\nDOTNET_ROOT=%s\n' "$(dirname "$(readlink -f "$dotnet_path")")" >> "$tmp/env"
  fi
  install -m 0640 -o root -g "$group" "$tmp/env" "$env_file"
  echo "wrote $env_file"
fi

if [ "$reload" = 1 ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi

echo "installed the silo into ${root:-/} (service user $user, group $group${extra_groups:+, also ${extra_groups[*]}})"
cat <<EOF

Next steps:
  1. Edit /etc/orchestrator/orchestrator.env: host name ($host_name), libvirt URI ($libvirt_uri), backup root
     ($backup_root); for a cluster: Persistence__Mode=Cluster, the PostgreSQL connection string, AdvertisedAddress;
     TLS paths and a tokens file before binding anything but loopback.
  2. systemctl daemon-reload && systemctl enable --now orchestrator-silo
     (systemctl start returns once the silo is ready: it sends READY=1 when it is an active cluster member)
  3. systemctl status orchestrator-silo; journalctl -u orchestrator-silo -f
     curl -s http://127.0.0.1:7071/health/ready
     orchestrator --endpoint http://127.0.0.1:7070 vm list
  4. Prometheus: scrape http://127.0.0.1:7071/metrics (deploy/grafana/prometheus.yml); alert rules:
     deploy/grafana/orchestrator-alerts.yml
EOF
