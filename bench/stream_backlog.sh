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
create_items_and_slots recvlogical_bench
write_backlog "$TXNS"
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
