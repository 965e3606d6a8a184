#!/usr/bin/env bash
# Benchmark: a migration into another PostgreSQL, pgflow against the native tools, one run.
#
# Two throwaway servers. A ROWS-row table (default 2,000,000: bigint key, text, numeric, int,
# timestamptz, text[], jsonb; primary key plus one secondary index) is copied into the target:
#   native:  CREATE SUBSCRIPTION ... WITH (copy_data = true), until the table is ready
#   dump:    pg_dump --data-only | psql into a table created beforehand
#   pgflow:  snapshot into an empty target (it creates the table, loads, builds the index)
# Then a backlog of CHANGES changes (default 500,000; transactions of 100: 60 inserts,
# 25 updates, 15 deletes) is written while both subscribers are stopped, and each drains it:
#   native:  ALTER SUBSCRIPTION ... ENABLE until its slot confirms the end of the backlog
#   pgflow:  pgflow run --until <end of the backlog>
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-2000000}
CHANGES=${CHANGES:-500000}
source bench/common.sh   # the source server, database bench
TPORT=$(scripts/pgtmp.sh start "$work/target")
trap 'scripts/pgtmp.sh stop "$work/target"; scripts/pgtmp.sh stop "$work/pg"; rm -rf "$work"' EXIT
tpsql() { psql -p "$TPORT" "$@"; }

TABLE="CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(12,2), qty int,
  updated_at timestamptz, tags text[], attrs jsonb); CREATE INDEX items_qty ON items (qty);"
echo "creating items: $ROWS rows"
psql -q -d bench >/dev/null <<SQL
$TABLE
INSERT INTO items SELECT g, 'item ' || md5(g::text), g * 1.25, g % 1000,
  now() - g * interval '1 second', ARRAY['alpha', 'beta', 'gamma' || (g % 10)],
  jsonb_build_object('k', g, 'color', 'red', 'size', g % 7)
FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE items;
CREATE PUBLICATION native_pub FOR TABLE items;
SQL
echo "items: $(psql -Atq -d bench -c "SELECT pg_size_pretty(pg_relation_size('items'))") of heap"
for db in native dump pgflow; do tpsql -q -d postgres -c "CREATE DATABASE $db"; done
tpsql -q -d native -c "$TABLE"
tpsql -q -d dump -c "$TABLE"

elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }

# Native initial sync.
t0=$(now)
tpsql -q -d native -c "CREATE SUBSCRIPTION native_sub CONNECTION 'host=127.0.0.1 port=$PGPORT dbname=bench user=postgres' PUBLICATION native_pub WITH (copy_data = true)"
until [ "$(tpsql -Atq -d native -c "SELECT bool_and(srsubstate = 'r') FROM pg_subscription_rel")" = t ]; do sleep 0.05; done
t1=$(now)
native_sync=$(elapsed "$t0" "$t1")

# pg_dump --data-only | psql.
t0=$(now)
"$PGBIN/pg_dump" -h 127.0.0.1 -p "$PGPORT" -U postgres --data-only -t items bench | tpsql -q -d dump >/dev/null
t1=$(now)
dump_copy=$(elapsed "$t0" "$t1")

# pgflow: snapshot into an empty target, indexes after; stops once streaming confirms `start`.
cat >"$work/migrate.yaml" <<YAML
pipeline: migrate
source:
  postgres:
    url: postgres://postgres@127.0.0.1:$PGPORT/bench
    tables: [public.items]
    snapshot: {mode: initial, workers: 2, chunk_size: 16MiB}
sinks:
  target: {postgres: {url: postgres://postgres@127.0.0.1:$TPORT/pgflow}}
YAML
start=$(psql -Atq -d bench -c "SELECT pg_current_wal_lsn()")
t0=$(now)
build/pgflow run "$work/migrate.yaml" --until "$start" --progress 0 2>"$work/pgflow-snapshot.log" \
  || { cat "$work/pgflow-snapshot.log"; exit 1; }
t1=$(now)
pgflow_sync=$(elapsed "$t0" "$t1")
[ "$(tpsql -Atq -d pgflow -c "SELECT count(*) FROM items")" = "$ROWS" ] || { echo "pgflow copied a wrong row count" >&2; exit 1; }

# The backlog, written while neither subscriber runs.
tpsql -q -d native -c "ALTER SUBSCRIPTION native_sub DISABLE"
sleep 1
python3 - "$((CHANGES / 100))" "$ROWS" >"$work/backlog.sql" <<'PY'
import sys
txns, base = int(sys.argv[1]), int(sys.argv[2])
for k in range(txns):
    a = base + k * 60 + 1
    print(f"BEGIN;"
          f"INSERT INTO items SELECT g, 'new ' || g, g * 1.25, g % 1000, now(), ARRAY['a'], "
          f"jsonb_build_object('k', g) FROM generate_series({a}, {a + 59}) g;"
          f"UPDATE items SET qty = qty + 1, updated_at = now() WHERE id BETWEEN {a} AND {a + 24};"
          f"DELETE FROM items WHERE id BETWEEN {a + 25} AND {a + 39};"
          f"COMMIT;")
PY
echo "writing the backlog: $CHANGES changes"
psql -q -d bench -f "$work/backlog.sql" >/dev/null
end=$(psql -Atq -d bench -c "SELECT pg_current_wal_lsn()")

t0=$(now)
tpsql -q -d native -c "ALTER SUBSCRIPTION native_sub ENABLE"
until [ "$(psql -Atq -d bench -c "SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = 'native_sub'")" = t ]; do sleep 0.05; done
t1=$(now)
native_apply=$(elapsed "$t0" "$t1")

t0=$(now)
build/pgflow run "$work/migrate.yaml" --until "$end" --progress 0 2>"$work/pgflow-stream.log" \
  || { cat "$work/pgflow-stream.log"; exit 1; }
t1=$(now)
pgflow_apply=$(elapsed "$t0" "$t1")
build/pgflow verify "$work/migrate.yaml" --ranges 16 | tail -n 1

python3 - "$ROWS" "$CHANGES" "$native_sync" "$dump_copy" "$pgflow_sync" "$native_apply" "$pgflow_apply" <<'PY'
import sys
rows, changes = int(sys.argv[1]), int(sys.argv[2])
ns, dc, ps, na, pa = map(float, sys.argv[3:])
print(f"initial copy of {rows:,} rows (PK + 1 index):")
print(f"  native logical replication (copy_data)  {ns:6.2f}s")
print(f"  pg_dump --data-only | psql              {dc:6.2f}s")
print(f"  pgflow snapshot into an empty target    {ps:6.2f}s   {ns / ps:.2f}x native (goal >= 1.8)")
print(f"apply of a {changes:,}-change backlog:")
print(f"  native logical replication              {na:6.2f}s  {changes / na:,.0f} changes/s")
print(f"  pgflow                                  {pa:6.2f}s  {changes / pa:,.0f} changes/s   {na / pa:.2f}x native (goal >= 1.2)")
PY
