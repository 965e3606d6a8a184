#!/usr/bin/env bash
# Benchmark: drain a recorded backlog of logical changes, pgflow against pg_recvlogical.
#
# One throwaway PostgreSQL; one publication; two pgoutput slots created before the backlog is
# written, so both drain exactly the same WAL. The backlog: CHANGES changes (default 500,000)
# in transactions of 100 (60 inserts, 25 updates, 15 deletes). Then, in the same run:
#   reference: pg_recvlogical --endpos (pgoutput, same publication) writing to /dev/null
#   pgflow:    pgflow run --until (jsonl sink writing to /dev/null)
# Each is timed from process start to exit; prints both rates and pgflow/reference.
set -euo pipefail
cd "$(dirname "$0")/.."
CHANGES=${CHANGES:-500000}
TXNS=$((CHANGES / 100))
source bench/common.sh
psql -q -d bench >/dev/null <<'SQL'
CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(12,2), qty int,
                    updated_at timestamptz, tags text[], attrs jsonb);
CREATE PUBLICATION pgflow_bench FOR TABLE items;
SELECT 'slot' FROM pg_create_logical_replication_slot('pgflow_bench', 'pgoutput');
SELECT 'slot' FROM pg_create_logical_replication_slot('recvlogical_bench', 'pgoutput');
SQL

echo "writing the backlog: $CHANGES changes in $TXNS transactions of 100"
python3 - "$TXNS" >"$work/backlog.sql" <<'PY'
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
WAL=$(psql -Atq -d bench -c "SELECT pg_size_pretty(pg_wal_lsn_diff('$END', confirmed_flush_lsn)) FROM pg_replication_slots WHERE slot_name = 'pgflow_bench'")
echo "backlog written: WAL up to $END ($WAL to decode)"

t0=$(now)
"$PGBIN/pg_recvlogical" -d "postgres://postgres@127.0.0.1:$PGPORT/bench" --slot recvlogical_bench \
  --start --endpos "$END" --no-loop -o proto_version=1 -o publication_names=pgflow_bench -f /dev/null
t1=$(now)

cat >"$work/bench.yaml" <<YAML
pipeline: bench
source:
  postgres:
    url: postgres://postgres@127.0.0.1:$PGPORT/bench
    tables: [public.items]
    snapshot: {mode: never}
sinks:
  out: {jsonl: {path: /dev/null}}
YAML
t2=$(now)
build/pgflow run "$work/bench.yaml" --until "$END" --progress 0 2>"$work/pgflow.log" || { cat "$work/pgflow.log"; exit 1; }
t3=$(now)
grep -E "stopped after" "$work/pgflow.log" || true

python3 - "$CHANGES" "$t0" "$t1" "$t2" "$t3" <<'PY'
import sys
n = int(sys.argv[1]); t0, t1, t2, t3 = map(float, sys.argv[2:])
ref, ours = n / (t1 - t0), n / (t3 - t2)
print(f"pg_recvlogical (reference): {n} changes in {t1 - t0:.2f}s = {ref:,.0f} changes/s")
print(f"pgflow -> jsonl /dev/null:  {n} changes in {t3 - t2:.2f}s = {ours:,.0f} changes/s")
print(f"ratio pgflow/pg_recvlogical = {ours / ref:.3f} (goal >= 0.95)")
PY
