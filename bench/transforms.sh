#!/usr/bin/env bash
# Benchmark: the cost of transforms. The recorded backlog of bench/stream_backlog.sh (CHANGES
# changes, default 500,000, in transactions of 100: 60 inserts, 25 updates, 15 deletes) drained
# into a jsonl sink writing to /dev/null, in one run, ROUNDS times each, alternately:
#   reference: no transforms (an empty chain)
#   built-ins: a filter with a row predicate that keeps every row (so that both runs write the
#              same events) and a mask hashing one column (HMAC-SHA-256) and redacting another
# Each run drains a slot of its own created before the backlog. Prints every run's wall and
# pgflow CPU time, and the ratio of the medians (goal: the built-ins cost under 15%).
set -euo pipefail
cd "$(dirname "$0")/.."
CHANGES=${CHANGES:-500000}
ROUNDS=${ROUNDS:-3}
TXNS=$((CHANGES / 100))
source bench/common.sh
create_items_and_slots unused_bench
for slot in $(for i in $(seq "$ROUNDS"); do echo empty_$i builtins_$i; done); do
  psql -Atq -d bench -c "SELECT 'slot' FROM pg_create_logical_replication_slot('$slot', 'pgoutput')" >/dev/null
done
write_backlog "$TXNS"
echo "backlog written: WAL up to $END"

TRANSFORMS='transforms:
  - filter: {table: public.items, where: "qty >= 0 and price > 0 or price is null"}
  - mask: {table: public.items, columns: {name: hash, tags: null}, salt: bench-salt}'
empty=()
builtins=()
for i in $(seq "$ROUNDS"); do
  bench_pipeline "empty_$i" "empty_$i" "{jsonl: {path: /dev/null}}" >"$work/empty_$i.yaml"
  empty+=("$(timed_pgflow "$work/empty_$i.yaml" "$work/empty_$i.log")")
  bench_pipeline "builtins_$i" "builtins_$i" "{jsonl: {path: /dev/null}}" "$TRANSFORMS" >"$work/builtins_$i.yaml"
  builtins+=("$(timed_pgflow "$work/builtins_$i.yaml" "$work/builtins_$i.log")")
done
grep -h "stopped after" "$work/empty_1.log" "$work/builtins_1.log" || true

python3 - "$CHANGES" "${empty[*]}" "${builtins[*]}" <<'PY'
import sys
n = int(sys.argv[1])
runs = [[tuple(map(float, r.split(","))) for r in arg.split()] for arg in sys.argv[2:4]]
med = lambda xs: sorted(xs)[len(xs) // 2]
show = lambda rs: ", ".join(f"{w:.2f}s wall/{c:.2f}s cpu" for w, c in rs)
(empty, builtins) = runs
ew, ec = med([w for w, _ in empty]), med([c for _, c in empty])
bw, bc = med([w for w, _ in builtins]), med([c for _, c in builtins])
print(f"empty chain (reference):   {show(empty)}")
print(f"filter + mask (built-ins): {show(builtins)}")
print(f"median: {n / ew:,.0f} changes/s empty, {n / bw:,.0f} changes/s with filter + mask "
      f"(ratio {ew / bw:.3f}, goal >= 0.85)")
print(f"pgflow CPU per change: {1e6 * ec / n:.2f} us empty, {1e6 * bc / n:.2f} us with filter + "
      f"mask (+{100 * (bc / ec - 1):.1f}%)")
PY
