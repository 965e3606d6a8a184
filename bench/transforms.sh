#!/usr/bin/env bash
# Benchmark: the cost of transforms. The recorded backlog of bench/stream_backlog.sh (CHANGES
# changes, default 500,000, in transactions of 100: 60 inserts, 25 updates, 15 deletes) drained
# into a jsonl sink writing to /dev/null, in one run, ROUNDS times each, alternately:
#   reference: no transforms (an empty chain)
#   built-ins: five in a row: a filter with a row predicate that keeps every row (so that every
#              run writes the same events), select (drops attrs), rename (qty -> quantity),
#              mask (name hashed with HMAC-SHA-256, tags nulled) and set (a new column from a
#              template over the event)
#   lua:       a lua transform that sets one field (qty + 1)
# Each run drains a slot of its own created before the backlog. Prints every run's wall and
# pgflow CPU time, and the ratios of the medians (goals: the built-ins cost under 15%, the lua
# transform keeps at least 0.7 of the empty chain's rate).
set -euo pipefail
cd "$(dirname "$0")/.."
CHANGES=${CHANGES:-500000}
ROUNDS=${ROUNDS:-3}
TXNS=$((CHANGES / 100))
source bench/common.sh
create_items_and_slots unused_bench
for slot in $(for i in $(seq "$ROUNDS"); do echo empty_$i builtins_$i lua_$i; done); do
  psql -Atq -d bench -c "SELECT 'slot' FROM pg_create_logical_replication_slot('$slot', 'pgoutput')" >/dev/null
done
write_backlog "$TXNS"
echo "backlog written: WAL up to $END"

BUILTINS='transforms:
  - filter: {table: public.items, where: "qty >= 0 and price > 0 or price is null"}
  - select: {table: public.items, columns: [name, price, qty, updated_at, tags]}
  - rename: {table: public.items, columns: {qty: quantity}}
  - mask: {table: public.items, columns: {name: hash, tags: null}, salt: bench-salt}
  - set: {table: public.items, columns: {origin: "{schema}.{table}@{lsn}"}}'
LUA='transforms:
  - lua:
      table: public.items
      script: |
        function transform(event)
          if event.after ~= nil and event.after.qty ~= nil then
            event.after.qty = event.after.qty + 1
          end
          return event
        end'
empty=()
builtins=()
lua=()
for i in $(seq "$ROUNDS"); do
  bench_pipeline "empty_$i" "empty_$i" "{jsonl: {path: /dev/null}}" >"$work/empty_$i.yaml"
  empty+=("$(timed_pgflow "$work/empty_$i.yaml" "$work/empty_$i.log")")
  bench_pipeline "builtins_$i" "builtins_$i" "{jsonl: {path: /dev/null}}" "$BUILTINS" >"$work/builtins_$i.yaml"
  builtins+=("$(timed_pgflow "$work/builtins_$i.yaml" "$work/builtins_$i.log")")
  bench_pipeline "lua_$i" "lua_$i" "{jsonl: {path: /dev/null}}" "$LUA" >"$work/lua_$i.yaml"
  lua+=("$(timed_pgflow "$work/lua_$i.yaml" "$work/lua_$i.log")")
done
grep -h "stopped after" "$work/empty_1.log" "$work/builtins_1.log" "$work/lua_1.log" || true

python3 - "$CHANGES" "${empty[*]}" "${builtins[*]}" "${lua[*]}" <<'PY'
import sys
n = int(sys.argv[1])
runs = [[tuple(map(float, r.split(","))) for r in arg.split()] for arg in sys.argv[2:5]]
med = lambda xs: sorted(xs)[len(xs) // 2]
show = lambda rs: ", ".join(f"{w:.2f}s wall/{c:.2f}s cpu" for w, c in rs)
(empty, builtins, lua) = runs
ew, ec = med([w for w, _ in empty]), med([c for _, c in empty])
bw, bc = med([w for w, _ in builtins]), med([c for _, c in builtins])
lw, lc = med([w for w, _ in lua]), med([c for _, c in lua])
print(f"empty chain (reference):       {show(empty)}")
print(f"five built-ins:                {show(builtins)}")
print(f"lua setting one field:         {show(lua)}")
print(f"median: {n / ew:,.0f} changes/s empty, {n / bw:,.0f} changes/s through five built-ins "
      f"(ratio {ew / bw:.3f}, goal >= 0.85), {n / lw:,.0f} changes/s through lua "
      f"(ratio {ew / lw:.3f}, goal >= 0.70)")
print(f"pgflow CPU per change: {1e6 * ec / n:.2f} us empty, {1e6 * bc / n:.2f} us with five "
      f"built-ins (+{100 * (bc / ec - 1):.1f}%), {1e6 * lc / n:.2f} us with lua "
      f"(+{100 * (lc / ec - 1):.1f}%)")
PY
