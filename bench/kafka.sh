#!/usr/bin/env bash
# Benchmark: the kafka sink against the jsonl sink, on a real Apache Kafka broker (KRaft, one
# node: scripts/kafkatmp.sh) and on librdkafka's mock cluster, and commit -> Kafka latency.
#
# 1. Throughput. One throwaway PostgreSQL; one publication; three pgoutput slots created before
#    the backlog is written, so every run drains exactly the same WAL: CHANGES changes (default
#    500,000) in transactions of 100 (60 inserts, 25 updates, 15 deletes), as in
#    stream_backlog.sh. Then, in the same run:
#      reference:   pgflow run --until, jsonl sink writing to /dev/null
#      kafka:       pgflow run --until, kafka sink into the real broker (the sink creates the
#                   topic: 3 partitions; tombstones off so that messages = changes), after
#                   the same backlog went once into another topic to warm the broker's JIT up
#                   (a broker in service is warm), and the broker's CPU time beside pgflow's
#      kafka mock:  the same into librdkafka's mock cluster (3 brokers, a process of its own)
#    --until returns only once every delivery report is back. Prints the rates and kafka/jsonl
#    (goal >= 0.8 on the real broker), and checks with kcat that every change was appended.
# 2. Latency, on the real broker and on the mock. pgflow streams a table into Kafka while
#    pgbench commits single-row inserts at RATE per second (default 1,000) for LATENCY_SECONDS
#    (default 20); kcat consumes the topic live. Per message: commit -> produced (the message's
#    CreateTime, stamped when pgflow hands it to librdkafka, minus the commit time in
#    source.ts_ms) and commit -> consumed (when kcat's output reaches this script: includes the
#    broker's acks=all and the consumer's fetch, a long poll on the broker). Prints p50/p99 of
#    both (goal: p99 under 20 ms on the real broker). On the real broker it runs a second time
#    into a topic that stamps each message when the broker appends it (LogAppendTime), which
#    splits the broker's share out: commit -> appended. Beside each run on the real broker, the
#    pauses its garbage collector made meanwhile (scripts/kafkatmp.sh logs them).
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

# The real broker.
KAFKA=$(scripts/kafkatmp.sh start "$work/kafka")
echo "Apache Kafka broker: $KAFKA"
# The mock cluster lives as long as its stdin: a fifo held open by this script.
mkfifo "$work/mock.in"
"$MOCK" 3 <"$work/mock.in" >"$work/mock.out" 2>"$work/mock.err" &
mock_pid=$!
exec 7>"$work/mock.in"
for _ in $(seq 100); do grep -q bootstrap "$work/mock.out" && break; sleep 0.1; done
MOCKED=$(awk '/^bootstrap/{print $2}' "$work/mock.out")
[ -n "$MOCKED" ] || { cat "$work/mock.err"; exit 1; }
trap 'exec 7>&-; wait $mock_pid 2>/dev/null; scripts/kafkatmp.sh stop "$work/kafka"; scripts/pgtmp.sh stop "$work/pg"; rm -rf "$work"' EXIT
mock() { echo "$*" >&7; }
# (The mock cannot be asked to create topics: they are made in it directly.)
mock topic bench_mock.public.items 3
mock topic latency_mock.public.lat 3
echo "mock Kafka cluster: $MOCKED"

create_items_and_slots jsonl_bench
psql -q -d bench -c "SELECT 'slot' FROM pg_create_logical_replication_slot('mock_bench', 'pgoutput')" >/dev/null
psql -q -d bench -c "SELECT 'slot' FROM pg_create_logical_replication_slot('warm_bench', 'pgoutput')" >/dev/null
write_backlog "$TXNS"
echo "backlog written: WAL up to $END"

bench_pipeline bench jsonl_bench "{jsonl: {path: /dev/null}}" >"$work/jsonl.yaml"
bench_pipeline bench pgflow_bench "{kafka: {brokers: \"$KAFKA\", tombstones: false$KAFKA_EXTRA}}" >"$work/kafka.yaml"
bench_pipeline bench_mock mock_bench "{kafka: {brokers: \"$MOCKED\", tombstones: false, create_topics: false$KAFKA_EXTRA}}" >"$work/mock.yaml"

# Wall time, and pgflow's own CPU time (user + system): on a shared machine the second moves
# less with the neighbours' load.
run() {  # name: prints "seconds cpu"
  local t0 t1
  t0=$(now)
  /usr/bin/time -f "%U %S" -o "$work/$1.cpu" "$PGFLOW_BINARY" run "$work/$1.yaml" --until "$END" \
    --progress 0 2>"$work/$1.log" || { cat "$work/$1.log" >&2; exit 1; }
  t1=$(now)
  echo "$(python3 -c "print($t1 - $t0)") $(awk '{print $1 + $2}' "$work/$1.cpu")"
}
on_topic() {  # brokers topic: messages appended (the sum of the partitions' end offsets)
  kcat -b "$1" -Q -t "$2:0:-1" -t "$2:1:-1" -t "$2:2:-1" | awk '{n += $NF} END {print n}'
}
# The broker warmed up first (its JIT compiles the hot paths in the first seconds), as a
# broker in service is: the same backlog into a topic of its own, not measured.
bench_pipeline warm warm_bench "{kafka: {brokers: \"$KAFKA\", topic: warmup, tombstones: false$KAFKA_EXTRA}}" >"$work/warm.yaml"
run warm >/dev/null
broker_cpu() {  # CPU seconds the broker's JVM has used so far
  awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$(cat "$work/kafka/pid")/stat"
}
jsonl_r=$(run jsonl)
b0=$(broker_cpu)
kafka_r=$(run kafka)
b1=$(broker_cpu)
mock_r=$(run mock)
python3 - "$CHANGES" "$jsonl_r" "$kafka_r" "$mock_r" "$(on_topic "$KAFKA" bench.public.items)" \
  "$(on_topic "$MOCKED" bench_mock.public.items)" "$b0" "$b1" <<'PY'
import sys
n = int(sys.argv[1])
(jt, jc), (kt, kc), (mt, mc) = (map(float, a.split()) for a in sys.argv[2:5])
on_real, on_mock = int(sys.argv[5]), int(sys.argv[6])
broker_cpu = float(sys.argv[8]) - float(sys.argv[7])
print(f"1. backlog of {n:,} changes")
print(f"pgflow -> jsonl /dev/null (reference):  {jt:6.2f}s {n / jt:>10,.0f} changes/s  (pgflow CPU {jc:.2f}s)")
print(f"pgflow -> kafka (Apache Kafka, 1 node): {kt:6.2f}s {n / kt:>10,.0f} messages/s (pgflow CPU {kc:.2f}s, the broker's {broker_cpu:.2f}s; {on_real:,} on the topic)")
print(f"pgflow -> kafka (mock, 3 brokers):      {mt:6.2f}s {n / mt:>10,.0f} messages/s (pgflow CPU {mc:.2f}s; {on_mock:,} on the topic)")
print(f"ratio kafka/jsonl = {jt / kt:.3f} on the broker (goal >= 0.8), {jt / mt:.3f} on the mock")
if on_real < n or on_mock < n:
    sys.exit(f"ERROR: changes missing from a topic ({on_real}, {on_mock} of {n})")
PY

# --- latency ---------------------------------------------------------------------------------
psql -q -d bench -c "CREATE TABLE lat (id bigserial PRIMARY KEY, v int)"
latency() {  # pipeline brokers label fetch-wait-ms [topic settings]
local topic_config="" stamped=produced
if [ -n "${5:-}" ]; then
  topic_config=", topic_config: {$5}"
  stamped="appended (LogAppendTime)"
fi
cat >"$work/lat.yaml" <<YAML
pipeline: $1
source:
  postgres:
    url: postgres://postgres@127.0.0.1:$PGPORT/bench
    tables: [public.lat]
    snapshot: {mode: never}
sinks:
  out: {kafka: {brokers: "$2"$topic_config$KAFKA_EXTRA}}
YAML
"$PGFLOW_BINARY" run "$work/lat.yaml" --progress 0 2>"$work/lat.log" &
pgflow_pid=$!
for _ in $(seq 300); do grep -q "streaming from" "$work/lat.log" && break; sleep 0.1; done
# A first row, so that pgflow creates the topic (3 partitions) before kcat asks for it.
psql -q -d bench -c "INSERT INTO lat (v) VALUES (0)"
for _ in $(seq 300); do
  kcat -b "$2" -L -t "$1.public.lat" 2>/dev/null | grep -q "3 partitions" && break
  sleep 0.1
done
echo 'INSERT INTO lat (v) VALUES (1);' >"$work/lat.sql"
# kcat's output goes through a fifo to a reader that stamps each line on arrival.
rm -f "$work/lat.fifo"
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
# A real broker answers a fetch as soon as a message arrives (fetch.min.bytes 1), so the
# consumer long-polls; the mock cluster does not, and is polled every millisecond instead.
kcat -b "$2" -C -t "$1.public.lat" -o end -u -q -X fetch.wait.max.ms="$4" \
  -X fetch.error.backoff.ms=1 -f '%T %s\n' >"$work/lat.fifo" 2>"$work/kcat.err" &
kcat_pid=$!
sleep 2
echo "2. latency on $3: pgbench at $RATE commits/s for ${LATENCY_SECONDS}s"
local gc_log=$work/kafka/gc.log gc_before
gc_before=$(wc -l <"$gc_log")
pgbench -n -R "$RATE" -T "$LATENCY_SECONDS" -c 4 -j 2 -f "$work/lat.sql" bench 2>&1 | grep -E "^(number of transactions actually processed|tps)" || true
sleep 2
kill $kcat_pid 2>/dev/null || { echo "kcat stopped early:"; cat "$work/kcat.err"; } >&2
wait $kcat_pid 2>/dev/null || true
wait $reader_pid 2>/dev/null || true
kill -TERM $pgflow_pid 2>/dev/null || true; wait $pgflow_pid || { cat "$work/lat.log"; exit 1; }
if [ "$2" = "$KAFKA" ]; then
  tail -n +"$((gc_before + 1))" "$gc_log" | python3 -c '
import re, sys
ms = [float(m) for m in re.findall(r"Pause.* ([0-9.]+)ms$", sys.stdin.read(), re.M)]
print(f"  the broker'"'"'s collector paused it {len(ms)} times meanwhile, {sum(ms):.0f} ms in all"
      + (f", longest {max(ms):.0f} ms" if ms else ""))'
fi
STAMPED=$stamped python3 - "$work/lat.samples" <<'PY' || { cat "$work/kcat.err" "$work/lat.log"; exit 1; }
import os, sys
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
print(f"  commit -> {os.environ['STAMPED']}: p50 {pct(produced, 50):.0f}  p99 {pct(produced, 99):.0f}")
print(f"  commit -> consumed: p50 {pct(consumed, 50):.0f}  p99 {pct(consumed, 99):.0f}  (goal p99 < 20)")
PY
}
latency latency "$KAFKA" "the Apache Kafka broker" ${FETCH_WAIT:-100}
latency latency_appended "$KAFKA" "the Apache Kafka broker, stamped on append" ${FETCH_WAIT:-100} \
  "message.timestamp.type: LogAppendTime"
latency latency_mock "$MOCKED" "the mock cluster" 1
