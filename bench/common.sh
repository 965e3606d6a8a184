# Shared by the benchmarks: a throwaway PostgreSQL with an empty database `bench`, removed on
# exit; PGHOST, PGPORT and PGUSER exported for psql; $work a scratch directory. Source it.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
# PGFLOW_BINARY runs another build of pgflow (default build/pgflow): an earlier commit's, to
# compare a change with what it changed in the same hour.
export PGFLOW_BINARY=${PGFLOW_BINARY:-build/pgflow}
# The full set-up (the servers, clients and tools the benchmarks compare with), unless it ran:
# the quickstart's set-up builds build/pgflow alone.
[ -x build/kv_bench ] || scripts/setup.sh >/dev/null

work=$(mktemp -d /tmp/pgflow-bench.XXXXXX)
trap 'scripts/pgtmp.sh stop "$work/pg"; rm -rf "$work"' EXIT
chmod 755 "$work"
PGPORT=$(scripts/pgtmp.sh start "$work/pg")
export PGPORT PGHOST=127.0.0.1 PGUSER=postgres
psql -q -d postgres -c "CREATE DATABASE bench"

now() { date +%s.%N; }

# Starts PgBouncer ($PGBOUNCER) as a daemon on the ini file $2, whose files are in directory $1,
# and prints its pid once its pidfile $3 appears (its log, $4, goes to stderr when it does not).
# As root it runs as postgres, with this shell's open-files limit.
launch_pgbouncer() {
  local dir=$1 ini=$2 pidfile=$3 log=$4
  touch "$log"
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$dir"
    # runuser's PAM session (pam_limits) resets the soft open-files limit to 1024: raised again.
    runuser -u postgres -- bash -c 'ulimit -n "$1" && exec "$2" -d "$3"' - "$(ulimit -n)" \
      "$PGBOUNCER" "$ini"
  else
    "$PGBOUNCER" -d "$ini"
  fi
  for _ in $(seq 100); do [ -s "$pidfile" ] && break; sleep 0.1; done
  cat "$pidfile" 2>/dev/null || { cat "$log" >&2; return 1; }
}

# Debian's pgcopydb, installed when missing (the migration benchmarks' contender).
need_pgcopydb() {
  command -v pgcopydb >/dev/null && return
  echo "installing pgcopydb (Debian)"
  apt-get -qq update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get -qq install -y pgcopydb >/dev/null
}

# The streaming benchmarks' table, publication pgflow_bench and two pgoutput slots created
# before any backlog: pgflow_bench and the reference's slot $1. Both then drain the same WAL.
create_items_and_slots() {
  psql -q -d bench >/dev/null <<SQL
CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(12,2), qty int,
                    updated_at timestamptz, tags text[], attrs jsonb);
CREATE PUBLICATION pgflow_bench FOR TABLE items;
SELECT 'slot' FROM pg_create_logical_replication_slot('pgflow_bench', 'pgoutput');
SELECT 'slot' FROM pg_create_logical_replication_slot('$1', 'pgoutput');
SQL
}

# Writes $1 transactions of 100 changes into items (60 inserts, 25 updates, 15 deletes) and
# sets END to the WAL position after them.
write_backlog() {
  echo "writing the backlog: $(($1 * 100)) changes in $1 transactions of 100"
  python3 - "$1" >"$work/backlog.sql" <<'PY'
import sys
for k in range(int(sys.argv[1])):
    a = k * 60 + 1
    print(f"BEGIN;"
          f"INSERT INTO items SELECT g, 'item ' || g, g * 1.25, g % 100, now(), "
          f"ARRAY['a','b'], jsonb_build_object('k', g) FROM generate_series({a}, {a + 59}) g;"
          f"UPDATE items SET qty = qty + 1, updated_at = now() WHERE id BETWEEN {a} AND {a + 24};"
          f"DELETE FROM items WHERE id BETWEEN {a + 25} AND {a + 39};"
          f"COMMIT;")
PY
  psql -q -d bench -f "$work/backlog.sql" >/dev/null
  END=$(psql -Atq -d bench -c "SELECT pg_current_wal_lsn()")
}

# CPU seconds (user + system, to $2 decimals, default 3) process $1 has used so far, with its
# children still running and those that have exited: bench/process_cpu.py.
process_tree_cpu() { python3 bench/process_cpu.py "$1" "${2:-3}"; }

# The same for a pgtmp server in directory $1 (its postmaster), to hundredths.
cluster_cpu() { process_tree_cpu "$(head -n 1 "$1/data/postmaster.pid")" 2; }

# Prints a pipeline file: pipeline $2 streaming table $1 from slot $3 (publication pgflow_bench,
# no snapshot) into one sink `out` of YAML $4; $5, if given, is added at the top level.
stream_pipeline() {
  cat <<YAML
pipeline: $2
source:
  postgres:
    url: postgres://postgres@127.0.0.1:$PGPORT/bench
    tables: [$1]
    snapshot: {mode: never}
    slot: $3
    publication: pgflow_bench
sinks:
  out: $4
${5:-}
YAML
}

# stream_pipeline of the streaming benchmarks' table: pipeline $1 streaming public.items from
# slot $2 into sink YAML $3; $4, if given, added at the top level.
bench_pipeline() { stream_pipeline public.items "$@"; }

# stream_pipeline of the latency benchmarks: pipeline lat streaming public.lat from slot
# lat_bench into sink YAML $1 (a flow mapping: {webhook: {...}, flush_interval: 10ms}).
latency_pipeline() { stream_pipeline public.lat lat lat_bench "$1"; }

# Runs `pgflow run $1 --until $END` logging into $2; prints "wall,cpu": its wall seconds and its
# CPU seconds (user + system), the steadier measure on a shared machine.
timed_pgflow() {
  python3 - "$1" "$END" "$2" <<'PY' || { cat "$2"; exit 1; }
import os, resource, subprocess, sys, time
start = time.monotonic()
with open(sys.argv[3], "w") as log:
    code = subprocess.call([os.environ["PGFLOW_BINARY"], "run", sys.argv[1], "--until", sys.argv[2],
                            "--progress", "0"], stderr=log)
wall = time.monotonic() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{wall:.3f},{usage.ru_utime + usage.ru_stime:.3f}")
sys.exit(code)
PY
}

# The load benchmarks' table: items with $1 rows (bigint key, text, numeric, int, timestamptz,
# text[], jsonb), vacuumed and analyzed.
create_loaded_items() {
  echo "creating items: $1 rows"
  psql -q -d bench >/dev/null <<SQL
CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(12,2), qty int,
                    updated_at timestamptz, tags text[], attrs jsonb);
INSERT INTO items SELECT g, 'item ' || md5(g::text), g * 1.25, g % 1000,
  now() - g * interval '1 second', ARRAY['alpha', 'beta', 'gamma' || (g % 10)],
  jsonb_build_object('k', g, 'color', 'red', 'size', g % 7)
FROM generate_series(1, $1) g;
VACUUM ANALYZE items;
SQL
}
