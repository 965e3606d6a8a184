#!/usr/bin/env bash
# Benchmark: what the web console costs a pipeline. The same backlog as stream_backlog.sh
# (CHANGES changes, default 2,000,000, in transactions of 100) drained by pgflow into jsonl at
# /dev/null, ROUNDS times (default 9) each way, in turn:
#   none:  no admin endpoint at all
#   idle:  the admin endpoint on, the console's sampler running, no one looking
#   page:  the console open in headless Chromium (bench/console_page.js), refreshing every 2 s
# Each run has a slot of its own, a copy of one created before the backlog. Prints the median wall time and
# pgflow's CPU per change of each way, and the page's cost against none (goal: under 2%).
set -euo pipefail
cd "$(dirname "$0")/.."
CHANGES=${CHANGES:-2000000}
ROUNDS=${ROUNDS:-9}
TXNS=$((CHANGES / 100))
source bench/common.sh
CACHE=build/drivers
HERE=tests/drivers
say() { echo "$*"; }
ROOT=$(pwd)
source tests/drivers/install.sh
install_drivers node
create_items_and_slots unused_bench
psql -Atq -d bench -c "SELECT pg_drop_replication_slot('unused_bench')" >/dev/null
write_backlog "$TXNS"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
IDLE_PORT=$(free_port)
PAGE_PORT=$(free_port)
# The page stays open across the page runs (they share its port) and asks nothing of the others.
NODE_PATH=$CACHE/node/node_modules node bench/console_page.js "127.0.0.1:$PAGE_PORT" >"$work/page.log" 2>&1 &
PAGE=$!
trap 'kill $PAGE 2>/dev/null; scripts/pgtmp.sh stop "$work/pg"; rm -rf "$work"' EXIT

# pgflow on a copy of slot pgflow_bench (made before the backlog, so every run drains the same
# WAL), named $1, with the admin endpoint on port $2 unless empty; prints "wall,cpu".
run() {
  local admin=""
  [ -n "$2" ] && admin="admin: {listen: '127.0.0.1:$2'}"
  psql -Atq -d bench -c "SELECT 'copied' FROM pg_copy_logical_replication_slot('pgflow_bench', '$1')" >/dev/null
  bench_pipeline "$1" "$1" "{jsonl: {path: /dev/null}}" "$admin" >"$work/$1.yaml"
  timed_pgflow "$work/$1.yaml" "$work/$1.log"
  psql -Atq -d bench -c "SELECT pg_drop_replication_slot('$1')" >/dev/null
}
none=(); idle=(); page=()
# Each round in another order (page, none, idle; none, idle, page; ...): a slow spell of the
# machine falls on every kind alike.
for i in $(seq "$ROUNDS"); do
  for k in $(echo page none idle page none | cut -d' ' -f$((1 + (i - 1) % 3))-$((3 + (i - 1) % 3))); do
    case $k in
      page) page+=("$(run "page_$i" "$PAGE_PORT")")
            grep -q "console open" "$work/page.log" || { cat "$work/page.log"; echo "the page never opened"; exit 1; } ;;
      none) none+=("$(run "none_$i" "")") ;;
      idle) idle+=("$(run "idle_$i" "$IDLE_PORT")") ;;
    esac
  done
done
python3 - "$CHANGES" "${none[*]}" "${idle[*]}" "${page[*]}" <<'PY'
import sys
n = int(sys.argv[1])
kinds = {name: [tuple(map(float, a.split(","))) for a in arg.split()]
         for name, arg in zip(["none", "idle", "page"], sys.argv[2:5])}
med = lambda xs: sorted(xs)[len(xs) // 2]
wall = {k: med([w for w, _ in v]) for k, v in kinds.items()}
cpu = {k: med([c for _, c in v]) for k, v in kinds.items()}
for k, v in kinds.items():
    print(f"{k:5}: " + ", ".join(f"{w:.2f}s wall/{c:.2f}s cpu" for w, c in v))
    print(f"       median {n / wall[k]:,.0f} changes/s, {1e6 * cpu[k] / n:.3f} us CPU per change")
for k in ("idle", "page"):
    print(f"{k} against none: wall {100 * (wall[k] / wall['none'] - 1):+.1f}%, "
          f"pgflow CPU {100 * (cpu[k] / cpu['none'] - 1):+.1f}% (goal < 2%)")
PY
