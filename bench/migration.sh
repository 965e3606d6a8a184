#!/usr/bin/env bash
# Benchmark: a migration into another PostgreSQL, pgflow against the native tools, one run.
#
# Two throwaway servers. A ROWS-row table (default 2,000,000: bigint key, text, numeric, int,
# timestamptz, text[], jsonb; primary key plus one secondary index) is copied into the target:
#   native:  CREATE SUBSCRIPTION ... WITH (copy_data = true), until the table is ready
#   dump:    pg_dump --data-only | psql into a table created beforehand
#   by hand: the issue's hand-tuned reference: two CTID-range binary COPY pipes at once (psql to
#            psql) into a table without indexes, then its two indexes side by side
#   pgcopydb: Debian's pgcopydb, `clone --table-jobs 2 --index-jobs 2` into an empty database
#            (schema, data, indexes and constraints, then VACUUM ANALYZE)
#   pgflow:  snapshot into an empty target (it creates the table, loads, builds the index, then
#            ANALYZE)
# Then a backlog of CHANGES changes (default 500,000; transactions of 100: 60 inserts,
# 25 updates, 15 deletes) is written while both subscribers are stopped, and each drains it:
#   native:  ALTER SUBSCRIPTION ... ENABLE until its slot confirms the end of the backlog
#   pgflow:  pgflow run --until <end of the backlog>
# The machine is shared: with ROUNDS=n (default 1) the five copies are made n times, each from
# scratch, in an order that turns round by one each round, and n backlogs are drained; the best
# time of each is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-2000000}
CHANGES=${CHANGES:-500000}
ROUNDS=${ROUNDS:-1}
source bench/common.sh   # the source server, database bench
need_pgcopydb
TPORT=$(scripts/pgtmp.sh start "$work/target")
trap 'scripts/pgtmp.sh stop "$work/target"; scripts/pgtmp.sh stop "$work/pg"; rm -rf "$work"' EXIT
tpsql() { psql -p "$TPORT" "$@"; }
# Autovacuum would wake at a random moment of some phase (the backlog leaves dead rows on both
# servers) and charge its CPU to whichever side it lands in: off, for every contender alike.
for port in "$PGPORT" "$TPORT"; do
  psql -q -p "$port" -d postgres -c "ALTER SYSTEM SET autovacuum = off" -c "SELECT pg_reload_conf()" >/dev/null
done
# The subscription's apply worker starts at once when enabled, not up to 5 s later because the
# launcher started a worker (the last round's sync) less than wal_retrieve_retry_interval ago.
psql -q -p "$TPORT" -d postgres -c "ALTER SYSTEM SET wal_retrieve_retry_interval = '100ms'" \
  -c "SELECT pg_reload_conf()" >/dev/null

HEAP="CREATE TABLE items (id bigint NOT NULL, name text, price numeric(12,2), qty int,
  updated_at timestamptz, tags text[], attrs jsonb)"
TABLE="${HEAP/id bigint NOT NULL/id bigint PRIMARY KEY}; CREATE INDEX items_qty ON items (qty);"
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
for db in native dump hand; do tpsql -q -d postgres -c "CREATE DATABASE $db"; done
tpsql -q -d native -c "$TABLE"
tpsql -q -d dump -c "$TABLE"

elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }
# Phases are timed by wall clock and by the CPU seconds each side spent: the source server
# (decoding, COPY TO), the target server (applying, COPY FROM, index builds) and pgflow.
# Each phase starts from the same state: the servers' dirty buffers written out (CHECKPOINT) and
# the kernel's dirty pages on disk (sync). Otherwise a phase pays for the write-back of the
# gigabytes the phases before it left behind, and the later contenders pay the most.
settle() {
  for port in "$PGPORT" "$TPORT"; do psql -q -p "$port" -d postgres -c CHECKPOINT; done
  sync
}
# The clock starts after the CPU readings (two Python runs, about 0.2 s), and stops before
# the closing ones: the timed window holds the contender's work alone.
begin_phase() {
  settle
  src0=$(cluster_cpu "$work/pg"); tgt0=$(cluster_cpu "$work/target"); t0=$(now)
}
# end_phase NAME [PGFLOW_TIME_FILE]: records NAME's wall time and CPU seconds.
end_phase() {
  local t1 src1 tgt1 own=0
  t1=$(now); src1=$(cluster_cpu "$work/pg"); tgt1=$(cluster_cpu "$work/target")
  [ -n "${2:-}" ] && own=$(awk '{print $1 + $2}' "$2")
  echo "$1 $(elapsed "$t0" "$t1") $(elapsed "$src0" "$src1") $(elapsed "$tgt0" "$tgt1") $own" >>"$work/phases"
}

cat >"$work/migrate.yaml" <<YAML
pipeline: migrate
source:
  postgres:
    url: postgres://postgres@127.0.0.1:$PGPORT/bench
    tables: [public.items]
    snapshot: {mode: initial, workers: 2}   # the default chunk_size
sinks:
  target: {postgres: {url: postgres://postgres@127.0.0.1:$TPORT/pgflow}}
YAML
# Each contender first empties its own target (untimed), then copies the table.
native_copy() {
  tpsql -q -d native -c "DROP SUBSCRIPTION IF EXISTS native_sub" -c "TRUNCATE items" 2>/dev/null
  begin_phase
  tpsql -q -d native -c "CREATE SUBSCRIPTION native_sub CONNECTION 'host=127.0.0.1 port=$PGPORT dbname=bench user=postgres' PUBLICATION native_pub WITH (copy_data = true)"
  until [ "$(tpsql -Atq -d native -c "SELECT bool_and(srsubstate = 'r') FROM pg_subscription_rel")" = t ]; do sleep 0.05; done
  end_phase native_sync
}
dump_copy() {  # pg_dump --data-only | psql
  tpsql -q -d dump -c "TRUNCATE items"
  begin_phase
  "$PGBIN/pg_dump" -h 127.0.0.1 -p "$PGPORT" -U postgres --data-only -t items bench | tpsql -q -d dump >/dev/null
  end_phase dump_copy
}
# The issue's hand-tuned reference: two CTID-range binary COPY pipes (psql to psql) at once into
# a table without indexes, then the key's index and the other index built side by side, and
# the key attached to its index.
hand_copy() {
  tpsql -q -d hand -c "DROP TABLE IF EXISTS items" -c "$HEAP"
  local half=$(($(psql -Atq -d bench -c "SELECT pg_relation_size('items') / 8192") / 2))
  begin_phase
  for range in "ctid < '($half,0)'" "ctid >= '($half,0)'"; do
    psql -Atq -d bench -c "COPY (SELECT * FROM items WHERE $range) TO STDOUT (FORMAT binary)" |
      tpsql -q -d hand -c "COPY items FROM STDIN (FORMAT binary)" &
  done
  wait
  for index in "UNIQUE INDEX items_pkey ON items (id)" "INDEX items_qty ON items (qty)"; do
    tpsql -q -d hand -c "SET maintenance_work_mem = '256MB'" -c "CREATE $index" &
  done
  wait
  tpsql -q -d hand -c "ALTER TABLE items ADD CONSTRAINT items_pkey PRIMARY KEY USING INDEX items_pkey"
  end_phase hand_copy
  [ "$(tpsql -Atq -d hand -c "SELECT count(*) FROM items")" = "$ROWS" ] || { echo "the hand-made copy has a wrong row count" >&2; exit 1; }
}
# pgflow: snapshot into an empty target, indexes after; stops once streaming confirms `start`.
pgflow_copy() {
  "$PGFLOW_BINARY" teardown "$work/migrate.yaml" >/dev/null 2>&1 || true
  tpsql -q -d postgres -c "DROP DATABASE IF EXISTS pgflow" -c "CREATE DATABASE pgflow"
  local start=$(psql -Atq -d bench -c "SELECT pg_current_wal_lsn()")
  begin_phase
  /usr/bin/time -f "%U %S" -o "$work/snapshot.cpu" "$PGFLOW_BINARY" run "$work/migrate.yaml" --until "$start" \
    --progress 0 2>"$work/pgflow-snapshot.log" || { cat "$work/pgflow-snapshot.log"; exit 1; }
  end_phase pgflow_sync "$work/snapshot.cpu"
  # pgflow's own steps, with their times (kept for the summary).
  grep -oE "(schema objects restored in|keys, indexes and constraints built in|table\(s\) analyzed in) [0-9.]+s" \
    "$work/pgflow-snapshot.log" | tr '\n' ';' >>"$work/pgflow-steps"; echo >>"$work/pgflow-steps"
  [ "$(tpsql -Atq -d pgflow -c "SELECT count(*) FROM items")" = "$ROWS" ] || { echo "pgflow copied a wrong row count" >&2; exit 1; }
}
# pgcopydb: its own clone, schema included, into an empty database. pgflow's schema, which an
# earlier round left in the source, is removed first (untimed): pgcopydb 0.10's filters keep
# the column defaults of tables they leave out, which then fail. Within a round pgcopydb runs
# before pgflow (ROUNDS <= 4), so the apply phase still finds pgflow's slot. In a session of
# its own: when it fails, pgcopydb signals its whole process group, this script included.
[ "$ROUNDS" -le 4 ] || { echo "ROUNDS: at most 4" >&2; exit 2; }
pgcopydb_copy() {
  "$PGFLOW_BINARY" teardown "$work/migrate.yaml" >/dev/null 2>&1 || true
  tpsql -q -d postgres -c "DROP DATABASE IF EXISTS pgcopydb" -c "CREATE DATABASE pgcopydb"
  rm -rf "$work/pgcopydb"
  begin_phase
  /usr/bin/time -f "%U %S" -o "$work/pgcopydb.cpu" setsid --wait pgcopydb clone \
    --source "postgres://postgres@127.0.0.1:$PGPORT/bench" \
    --target "postgres://postgres@127.0.0.1:$TPORT/pgcopydb" \
    --table-jobs 2 --index-jobs 2 --dir "$work/pgcopydb" \
    >"$work/pgcopydb.log" 2>&1 || { tail -n 30 "$work/pgcopydb.log"; exit 1; }
  end_phase pgcopydb_copy "$work/pgcopydb.cpu"
  [ "$(tpsql -Atq -d pgcopydb -c "SELECT count(*) FROM items")" = "$ROWS" ] || { echo "pgcopydb copied a wrong row count" >&2; exit 1; }
}
# Round n starts with the n-th contender and goes round: each runs first once every five rounds,
# so that none always follows the same neighbour (what a phase leaves behind, in the page cache
# and in memory the host must back again, weighs on the next one).
contenders=(native_copy dump_copy hand_copy pgcopydb_copy pgflow_copy)
for round in $(seq "$ROUNDS"); do
  for k in 0 1 2 3 4; do "${contenders[$(((round - 1 + k) % 5))]}"; done
done

# The backlog, written while neither subscriber runs; with ROUNDS=n, n backlogs (each on new
# keys), drained by the two in turn, native first in odd rounds and pgflow first in even ones.
tpsql -q -d native -c "ALTER SUBSCRIPTION native_sub DISABLE"
sleep 1
native_apply() {
  begin_phase
  tpsql -q -d native -c "ALTER SUBSCRIPTION native_sub ENABLE"
  until [ "$(psql -Atq -d bench -c "SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = 'native_sub'")" = t ]; do sleep 0.05; done
  end_phase native_apply
  tpsql -q -d native -c "ALTER SUBSCRIPTION native_sub DISABLE"
}
pgflow_apply() {
  begin_phase
  /usr/bin/time -f "%U %S" -o "$work/stream.cpu" "$PGFLOW_BINARY" run "$work/migrate.yaml" --until "$end" \
    --progress 0 2>"$work/pgflow-stream.log" || { cat "$work/pgflow-stream.log"; exit 1; }
  end_phase pgflow_apply "$work/stream.cpu"
}
for round in $(seq "$ROUNDS"); do
  python3 - "$((CHANGES / 100))" "$((ROWS + (round - 1) * CHANGES))" >"$work/backlog.sql" <<'PY'
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
  if [ $((round % 2)) = 1 ]; then native_apply; pgflow_apply; else pgflow_apply; native_apply; fi
done
"$PGFLOW_BINARY" verify "$work/migrate.yaml" --ranges 16 | tail -n 1
sed 's/^/pgflow steps: /' "$work/pgflow-steps"

python3 - "$ROWS" "$CHANGES" "$work/phases" "$ROUNDS" <<'PY'
import sys
rows, changes, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[4])
phase, walls = {}, {}
for line in open(sys.argv[3]):  # the fastest of each phase's rounds
    name, *figures = line.split()
    figures = [float(x) for x in figures]
    walls.setdefault(name, []).append(figures[0])
    if name not in phase or figures[0] < phase[name][0]:
        phase[name] = figures
def row(label, name, extra="", own_name="pgflow"):
    wall, src, tgt, own = phase[name]
    cpu = f"cpu: source {src:5.2f}s  target {tgt:5.2f}s" + (f"  {own_name} {own:5.2f}s" if own else "")
    print(f"  {label:<40}{wall:6.2f}s  {extra:<39}  {cpu}")
ns, ps = phase["native_sync"][0], phase["pgflow_sync"][0]
na, pa = phase["native_apply"][0], phase["pgflow_apply"][0]
print(f"initial copy of {rows:,} rows (PK + 1 index)" + (f", best of {rounds}:" if rounds > 1 else ":"))
row("native logical replication (copy_data)", "native_sync")
row("pg_dump --data-only | psql", "dump_copy")
row("by hand: 2 COPY pipes, indexes after", "hand_copy", f"{ns / phase['hand_copy'][0]:.2f}x native")
row("pgcopydb clone (2+2 jobs, with ANALYZE)", "pgcopydb_copy", f"{ns / phase['pgcopydb_copy'][0]:.2f}x native", "pgcopydb")
row("pgflow snapshot into an empty target", "pgflow_sync", f"{ns / ps:.2f}x native (goal >= 1.8), {phase['pgcopydb_copy'][0] / ps:.2f}x pgcopydb (goal >= 1.3)")
print(f"apply of a {changes:,}-change backlog" + (f", best of {rounds}:" if rounds > 1 else ":"))
row("native logical replication", "native_apply", f"{changes / na:,.0f} changes/s")
row("pgflow", "pgflow_apply", f"{changes / pa:,.0f}/s  {na / pa:.2f}x native (goal >= 1.2)")
if rounds > 1:
    print("every round's wall time, in the order run:")
    for name, times in walls.items():
        print(f"  {name:<14}" + "  ".join(f"{t:6.2f}s" for t in times))
PY
