#!/usr/bin/env bash
# Benchmark: drain a recorded backlog of logical changes, pgflow against pg_recvlogical.
#
# One throwaway PostgreSQL; one publication; two pgoutput slots created before the backlog is
# written, so both drain exactly the same WAL. The backlog: CHANGES changes (default 500,000)
# in transactions of 100 (60 inserts, 25 updates, 15 deletes). Then, in the same run:
#   reference: pg_recvlogical --endpos (pgoutput, same publication) writing to /dev/null
#   pgflow:    pgflow run --until (jsonl sink writing to /dev/null)
# Each is timed from process start to exit; prints both rates and pgflow/reference.
# Then the cost of metrics: pgflow again on the same backlog (slots of their own, created before
# it), alternately with and without the admin endpoint scraped by curl every second, ROUNDS
# times each; the medians of each kind are compared (goal: under 3% slower with it).
set -euo pipefail
cd "$(dirname "$0")/.."
CHANGES=${CHANGES:-500000}
ROUNDS=${ROUNDS:-5}  # runs with and without the admin endpoint, alternately
TXNS=$((CHANGES / 100))
source bench/common.sh
create_items_and_slots recvlogical_bench
for slot in $(for i in $(seq $ROUNDS); do echo plain_$i admin_$i; done); do
  psql -Atq -d bench -c "SELECT 'slot' FROM pg_create_logical_replication_slot('$slot', 'pgoutput')" >/dev/null
done
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
"$PGFLOW_BINARY" run "$work/bench.yaml" --until "$END" --progress 0 2>"$work/pgflow.log" || { cat "$work/pgflow.log"; exit 1; }
t3=$(now)
grep -E "stopped after" "$work/pgflow.log" || true

# pgflow on slot $1, with the admin endpoint on port $2 scraped every second unless $2 is empty;
# prints its wall time.
timed_run() {
  local yaml="$work/$1.yaml" admin="" scraper=""
  [ -n "$2" ] && admin="admin: {listen: '127.0.0.1:$2'}"
  bench_pipeline "$1" "$1" "{jsonl: {path: /dev/null}}" "$admin" >"$yaml"
  if [ -n "$2" ]; then
    (while sleep 1; do curl -s -o /dev/null "http://127.0.0.1:$2/metrics"; curl -s -o /dev/null "http://127.0.0.1:$2/status"; done) &
    scraper=$!
  fi
  timed_pgflow "$yaml" "$work/$1.log"
  [ -n "$scraper" ] && kill "$scraper" 2>/dev/null
  [ -z "$2" ] || grep -q "admin endpoint" "$work/$1.log" || { echo "no admin endpoint in $1"; exit 1; }
}
ADMIN_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
plain=()
admin=()
for i in $(seq "$ROUNDS"); do
  admin+=("$(timed_run "admin_$i" "$ADMIN_PORT")")
  plain+=("$(timed_run "plain_$i" "")")
done

python3 - "$CHANGES" "$t0" "$t1" "$t2" "$t3" "${plain[*]}" "${admin[*]}" <<'PY'
import sys
n = int(sys.argv[1]); t0, t1, t2, t3 = map(float, sys.argv[2:6])
plain = [tuple(map(float, a.split(","))) for a in sys.argv[6].split()]
admin = [tuple(map(float, a.split(","))) for a in sys.argv[7].split()]
ref, ours = n / (t1 - t0), n / (t3 - t2)
print(f"pg_recvlogical (reference): {n} changes in {t1 - t0:.2f}s = {ref:,.0f} changes/s")
print(f"pgflow -> jsonl /dev/null:  {n} changes in {t3 - t2:.2f}s = {ours:,.0f} changes/s")
print(f"ratio pgflow/pg_recvlogical = {ours / ref:.3f} (goal >= 0.95)")
# The cost of metrics, in pgflow's own CPU time per change (median of each kind's runs; wall
# times on this machine vary by a quarter from run to run for reasons of their own).
med = lambda xs: sorted(xs)[len(xs) // 2]
off_cpu, on_cpu = med([c for _, c in plain]), med([c for _, c in admin])
off_wall, on_wall = med([w for w, _ in plain]), med([w for w, _ in admin])
runs = lambda rs: ", ".join(f"{w:.2f}s wall/{c:.2f}s cpu" for w, c in rs)
print(f"pgflow, no admin endpoint:                     {runs(plain)}")
print(f"pgflow, /metrics and /status scraped every 1s: {runs(admin)}")
print(f"median wall: {n / off_wall:,.0f} changes/s without, {n / on_wall:,.0f} changes/s with: "
      f"{100 * (on_wall / off_wall - 1):+.1f}% time")
print(f"pgflow CPU per change (median): {1e6 * off_cpu / n:.2f} us without, "
      f"{1e6 * on_cpu / n:.2f} us with: cost of metrics = {100 * (on_cpu / off_cpu - 1):+.1f}% "
      f"(goal < 3%)")
PY
