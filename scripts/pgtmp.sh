#!/usr/bin/env bash
# A throwaway PostgreSQL for the quickstart, the tests and the benchmarks.
#
#   scripts/pgtmp.sh start DIR   initdb in DIR (must not exist or be empty), start on a free
#                                loopback port with wal_level=logical; prints the port
#   scripts/pgtmp.sh stop DIR    stop it (fast) and delete DIR
#   scripts/pgtmp.sh pause DIR   stop it, keeping DIR; `resume DIR` starts it again
#   scripts/pgtmp.sh standby DIR PORT
#                                a hot standby of the server on 127.0.0.1:PORT (pg_basebackup,
#                                streaming), started in DIR on a free port; prints the port
#
# Trust authentication on 127.0.0.1 and on a Unix socket inside DIR; superuser "postgres".
# As root, the server runs as the `postgres` user (PostgreSQL refuses to run as root).
set -euo pipefail

PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[ -x "$PGBIN/initdb" ] || { echo "pgtmp: no PostgreSQL server binaries under /usr/lib/postgresql (install postgresql)" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  python3 - <<'PY' 2>/dev/null || echo $(( 20000 + RANDOM % 20000 ))
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

make_dir() {  # DIR, owned by the server's user
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$dir"
    runuser -u postgres -- test -x "$dir" || {
      echo "pgtmp: the postgres user cannot reach $dir: make its parent directories searchable (chmod o+x)" >&2
      exit 1
    }
  fi
}

# Starts the server in DIR/data on a free loopback port, with what `$1 PORT` prints appended
# to its postgresql.conf (taken back when the port was taken meanwhile, before the next try);
# prints the port and writes it to DIR/port, or prints the server's log and fails.
start_on_a_free_port() {
  local conf="$dir/data/postgresql.conf" kept port
  kept=$(wc -l <"$conf")
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    "$1" "$port" >>"$conf"
    if as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null; then
      echo "$port" >"$dir/port"
      echo "$port"
      exit 0
    fi
    sed -i "$((kept + 1)),\$d" "$conf"
  done
  cat "$dir/server.log" >&2
  exit 1
}

server_settings() {  # PORT
  cat <<CONF
listen_addresses = '127.0.0.1'
port = $1
unix_socket_directories = '$dir'
wal_level = logical
max_wal_senders = 20
max_replication_slots = 20
wal_sender_timeout = 60s
fsync = off
full_page_writes = off
shared_buffers = 256MB
max_connections = 100
log_min_messages = warning
CONF
}

standby_settings() {  # PORT (later lines win over the primary's copied ones)
  printf "port = %s\nunix_socket_directories = '%s'\nhot_standby = on\n" "$1" "$dir"
}

case "$cmd" in
  standby)
    primary=${3:?usage: $0 standby DIR PRIMARY_PORT}
    make_dir
    as_owner "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$primary" -U postgres -D "$dir/data" -R \
      -X stream -c fast >"$dir/basebackup.log" 2>&1 || { cat "$dir/basebackup.log" >&2; exit 1; }
    start_on_a_free_port standby_settings
    ;;
  start)
    make_dir
    as_owner "$PGBIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
      >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    start_on_a_free_port server_settings
    ;;
  pause)  # stop the server, keeping its data and port
    as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  resume)  # start a paused server again
    as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
    ;;
  stop)
    [ -d "$dir/data" ] && as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 start|stop|pause|resume DIR, or standby DIR PRIMARY_PORT" >&2; exit 2 ;;
esac
