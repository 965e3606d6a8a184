#!/usr/bin/env bash
# Benchmark: the kafka sink against the jsonl sink, and commit -> Kafka latency.
#
# 1. Throughput. One throwaway PostgreSQL; one publication; two pgoutput slots created before
#    the backlog is written, so both runs drain exactly the same WAL: CHANGES changes (default
#    500,000) in transactions of 100 (60 inserts, 25 updates, 15 deletes), as in
#    stream_backlog.sh. Then, in the same run:
#      reference: pgflow run --until, jsonl sink writing to /dev/null
#      kafka:     pgflow run --until, kafka sink into librdkafka's mock cluster (3 brokers, a
#                 process of its own; topic of 3 partitions; tombstones off so that messages =
#                 changes); --until returns only once every delivery report is back
#    Prints both rates and kafka/jsonl (goal >= 0.8), and checks with kcat that every change was
#    appended to the topic.
# 2. Latency. pgflow streams a table into the mock cluster while pgbench commits single-row
#    inserts at RATE per second (default 1,000) for LATENCY_SECONDS (default 20); kcat consumes the
#    topic live. Per message: commit -> produced (the message's CreateTime, stamped when
#    pgflow hands it to librdkafka, minus the commit time in source.ts_ms) and commit ->
#    consumed (when kcat's output reaches this script: includes the broker's acks=all and
#    the consumer's fetch). Prints p50/p99 of both (goal: p99 under 20 ms).
# The machine may be shared: the figures are of one run, reference beside them.
set -euo pipefail
cd "$(dirname "$0")/.."
CHANGES=${CHANGES:-500000}
TXNS=$((CHANGES / 100))
RATE=${RATE:-1000}
LATENCY_SECONDS=${LATENCY_SECONDS:-20}
KAFKA_EXTRA=${KAFKA_EXTRA:-}  # more kafka sink options, e.g. ", properties: {linger.ms: 5}"
source bench/common.sh
MOCK=${KAFKA_MOCK_CLUSTER:-build/kafka_mock_cluster}
[ -x "$MOCK" ] || ninja -C build kafka_mock_cluster >/dev/null

# The mock cluster lives as long as its stdin: a fifo held open by this script.
mkfifo "$work/mock.in"
"$MOCK" 3 <"$work/mock.in" >"$work/mock.out" 2>"$work/mock.err" &
mock_pid=$!
exec 7>"$work/mock.in"
for _ in $(seq 100); do grep -q bootstrap "$work/mock.out" && break; sleep 0.1; done
BROKERS=$(awk '/^bootstrap/{print $2}' "$work/mock.out")
[ -n "$BROKERS" ] || { cat "$work/mock.err"; exit 1; }
trap 'exec 7>&-; wait $mock_pid 2>/dev/null; scripts/pgtmp.sh stop "$work/pg"; rm -rf "$work"' EXIT
mock() { echo "$*" >&7; }
mock topic bench.public.items 3
mock topic latency.public.lat 3
echo "mock Kafka cluster: $BROKERS"

create_items_and_slots jsonl_bench
write_backlog "$TXNS"
echo "backlog written: WAL up to $END"

bench_pipeline bench jsonl_bench "{jsonl: {path: /dev/null}}" >"$work/jsonl.yaml"
bench_pipeline bench pgflow_bench "{kafka: {brokers: \"$BROKERS\", tombstones: false, create_topics: false$KAFKA_EXTRA}}" >"$work/kafka.yaml"

# Wall time, and pgflow's own CPU time (user + system): on a shared machine the second moves
# less with the neighbours' load.
t0=$(now)
/usr/bin/time -f "%U %S" -o "$work/jsonl.cpu" build/pgflow run "$work/jsonl.yaml" --until "$END" --progress 0 2>"$work/jsonl.log" || { cat "$work/jsonl.log"; exit 1; }
t1=$(now)
/usr/bin/time -f "%U %S" -o "$work/kafka.cpu" build/pgflow run "$work/kafka.yaml" --until "$END" --progress 0 2>"$work/kafka.log" || { cat "$work/kafka.log"; exit 1; }
t2=$(now)
grep -hE "stopped after" "$work/jsonl.log" "$work/kafka.log" || true
# The mock cluster keeps only the last few MB of each partition, so the messages are counted
# by the partitions' end offsets (the topic was empty), not by reading them all back.
ON_TOPIC=$(kcat -b "$BROKERS" -Q -t bench.public.items:0:-1 -t bench.public.items:1:-1 \
  -t bench.public.items:2:-1 | awk '{n += $NF} END {print n}')
echo "messages appended to bench.public.items (kcat, end offsets): $ON_TOPIC"

python3 - "$CHANGES" "$t0" "$t1" "$t2" "$ON_TOPIC" "$work/jsonl.cpu" "$work/kafka.cpu" <<'PY'
import sys
n = int(sys.argv[1]); t0, t1, t2 = map(float, sys.argv[2:5]); on_topic = int(sys.argv[5])
cpu = [sum(map(float, open(f).read().split())) for f in sys.argv[6:8]]
ref, ours = n / (t1 - t0), n / (t2 - t1)
print(f"pgflow -> jsonl /dev/null (reference): {n} changes in {t1 - t0:.2f}s = {ref:,.0f} changes/s")
print(f"pgflow -> kafka (mock, 3 brokers):     {n} changes in {t2 - t1:.2f}s = {ours:,.0f} messages/s")
print(f"ratio kafka/jsonl = {ours / ref:.3f} (goal >= 0.8)")
print(f"pgflow CPU time: jsonl {cpu[0]:.2f}s ({n / cpu[0]:,.0f} changes per CPU-second), "
      f"kafka {cpu[1]:.2f}s ({n / cpu[1]:,.0f}); the mock cluster's own CPU not counted")
if on_topic < n:
    print(f"ERROR: only {on_topic} of {n} changes on the topic")
    sys.exit(1)
PY

# --- latency ---------------------------------------------------------------------------------
psql -q -d bench -c "CREATE TABLE lat (id bigserial PRIMARY KEY, v int)"
cat >"$work/lat.yaml" <<YAML
pipeline: latency
source:
  postgres:
    url: postgres://postgres@127.0.0.1:$PGPORT/bench
    tables: [public.lat]
    snapshot: {mode: never}
sinks:
  out: {kafka: {brokers: "$BROKERS", create_topics: false$KAFKA_EXTRA}}
YAML
build/pgflow run "$work/lat.yaml" --progress 0 2>"$work/lat.log" &
pgflow_pid=$!
for _ in $(seq 300); do grep -q "streaming from" "$work/lat.log" && break; sleep 0.1; done
echo 'INSERT INTO lat (v) VALUES (1);' >"$work/lat.sql"
# kcat's output goes through a fifo to a reader that stamps each line on arrival.
mkfifo "$work/lat.fifo"
python3 - "$work/lat.fifo" >"$work/lat.samples" <<'PY' &
import json, sys, time
with open(sys.argv[1], "rb", buffering=0) as f:
    buf = b""
    while True:
        chunk = f.read(65536)
        if not chunk:
            break
        now_ms = time.time() * 1000
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            ts, payload = line.split(b" ", 1)
            commit_ms = json.loads(payload)["source"]["ts_ms"]
            print(int(ts) - commit_ms, now_ms - commit_ms)
PY
reader_pid=$!
kcat -b "$BROKERS" -C -t latency.public.lat -o end -u -q -X fetch.wait.max.ms=1 \
  -X fetch.error.backoff.ms=1 -f '%T %s\n' >"$work/lat.fifo" 2>"$work/kcat.err" &
kcat_pid=$!
sleep 2
echo "latency: pgbench at $RATE commits/s for ${LATENCY_SECONDS}s"
pgbench -n -R "$RATE" -T "$LATENCY_SECONDS" -c 4 -j 2 -f "$work/lat.sql" bench 2>&1 | grep -E "^(number of transactions actually processed|tps)" || true
sleep 2
kill $kcat_pid; wait $kcat_pid 2>/dev/null || true
wait $reader_pid 2>/dev/null || true
kill -TERM $pgflow_pid; wait $pgflow_pid || { cat "$work/lat.log"; exit 1; }
python3 - "$work/lat.samples" <<'PY' || { cat "$work/kcat.err" "$work/lat.log"; exit 1; }
import sys
produced, consumed = [], []
for line in open(sys.argv[1]):
    a, b = line.split()
    produced.append(float(a)); consumed.append(float(b))
if not produced:
    sys.stdout.flush()
    print("latency: no samples"); sys.exit(1)
def pct(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(len(xs) * p / 100))]
print(f"latency over {len(produced)} changes (ms, commit time has 1 ms resolution):")
print(f"  commit -> produced: p50 {pct(produced, 50):.0f}  p99 {pct(produced, 99):.0f}")
print(f"  commit -> consumed: p50 {pct(consumed, 50):.0f}  p99 {pct(consumed, 99):.0f}  (goal p99 < 20)")
PY
