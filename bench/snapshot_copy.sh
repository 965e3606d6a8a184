#!/usr/bin/env bash
# Benchmark: the parallel CTID-range snapshot against one plain binary COPY of the same table.
#
# One throwaway PostgreSQL with a ROWS-row table (default 2,000,000, about 380 MB: bigint key,
# text, numeric, int, timestamptz, text[], jsonb). In the same run:
#   reference: psql -c "COPY items TO STDOUT (FORMAT binary)" > /dev/null
#   pgflow:    snapshot mode `only` into a `blackhole` sink, with 1, 2 and 4 workers, rows
#              decoded as for every sink; then the raw COPY path (rows not decoded) that a
#              PostgreSQL target takes
# Each is timed from process start to exit (best of RUNS, default 2); prints rows/s, MB/s and
# the ratio to the single COPY.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-2000000}
RUNS=${RUNS:-2}
source bench/common.sh
create_loaded_items "$ROWS"
BYTES=$(psql -Atq -d bench -c "SELECT pg_relation_size('items')")
echo "items: $ROWS rows, $((BYTES / 1048576)) MB of heap"

best() {  # best of RUNS timings of the command given
  local best_t=""
  for _ in $(seq "$RUNS"); do
    local t0 t1
    t0=$(now); "$@" >/dev/null 2>"$work/last.log" || { cat "$work/last.log" >&2; exit 1; }; t1=$(now)
    best_t=$(python3 -c "t=$t1-$t0; b='$best_t'; print(t if not b or t < float(b) else b)")
  done
  echo "$best_t"
}
copy_t=$(best psql -d bench -c "COPY items TO STDOUT (FORMAT binary)")

report() {
  python3 - "$1" "$2" "$ROWS" "$BYTES" "$copy_t" <<'PY'
import sys
name, t, rows, size, ref = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
print(f"{name:<34} {t:6.2f}s {rows / t:>12,.0f} rows/s {size / t / 1048576:8.1f} MB/s   ratio to COPY {ref / t:.3f}")
PY
}
report "COPY (FORMAT binary) via psql" "$copy_t"
run_pgflow() {  # workers, raw_copy
  cat >"$work/snap.yaml" <<YAML
pipeline: bench
source:
  postgres:
    url: postgres://postgres@127.0.0.1:$PGPORT/bench
    tables: [public.items]
    snapshot: {mode: only, workers: $1, chunk_size: 16MiB}
sinks:
  discard: {blackhole: {raw_copy: $2}}
YAML
  best "$PGFLOW_BINARY" run "$work/snap.yaml" --progress 0
}
for workers in 1 2 4; do
  report "pgflow snapshot, $workers worker(s)" "$(run_pgflow "$workers" false)"
done
# The path a PostgreSQL target takes: rows handed on as raw COPY data, not decoded.
for workers in 1 4; do
  report "  raw COPY path, $workers worker(s)" "$(run_pgflow "$workers" true)"
done
echo "goal: 1 worker >= 0.9 of the single COPY; more workers faster where the cores allow ($(nproc) cores)"
