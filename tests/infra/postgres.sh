#!/usr/bin/env bash
# A private PostgreSQL for the tests: its own data dir, port and socket dir; never the machine's cluster.
#   postgres.sh install            install the Debian packages if missing
#   postgres.sh start DIR PORT     init (first time) and start; prints the Npgsql connection string
#   postgres.sh stop DIR           stop and delete DIR
set -euo pipefail

pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$bin" ] || { echo "postgres.sh: PostgreSQL server binaries not found (run: $0 install)" >&2; exit 1; }
  echo "$bin"
}

as_postgres() { runuser -u postgres -- "$@"; }

case "${1:-}" in
  install)
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
      apt-get -o DPkg::Lock::Timeout=300 update -qq
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq postgresql >/dev/null
    fi
    ;;
  start)
    dir=${2:?usage: postgres.sh start DIR PORT}
    port=${3:?usage: postgres.sh start DIR PORT}
    bin=$(pg_bin)
    mkdir -p "$dir"
    chown postgres:postgres "$dir"
    chmod 700 "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_postgres "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
    as_postgres "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='orchestrator'" | grep -q 1 \
      || as_postgres "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres orchestrator
    echo "Host=127.0.0.1;Port=$port;Username=postgres;Database=orchestrator;Pooling=true;Maximum Pool Size=50"
    ;;
  stop)
    dir=${2:?usage: postgres.sh stop DIR}
    bin=$(pg_bin)
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_postgres "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: postgres.sh install | start DIR PORT | stop DIR" >&2
    exit 2
    ;;
esac
