#!/usr/bin/env bash
# Benchmark: the `webhook` sink, in one run, on one throwaway PostgreSQL and the webhook test
# receiver (tests/integration/tools/webhook_receiver: Go's net/http, answers 200 at once,
# checks every signature, logs nothing):
#
# 1. Throughput: a backlog of CHANGES (default 200,000) changes (transactions of 100: 60 inserts,
#    25 updates, 15 deletes) drained by `pgflow run --until` three times from three slots made
#    before it: into a `jsonl` sink writing to /dev/null (the reference: pgflow without the
#    network), into the receiver one event per request (batch 1) and 100 per request
#    (batch 100). Events/s of each; goals: batch 100 at least 0.8 of jsonl's rate, batch 1 above
#    10,000 events/s. The receiver's count of events must equal the changes.
# 2. Latency: LATENCY_SECONDS (default 20) of 1,000 single-row transactions a second streamed
#    to the receiver (batch 1), which takes, for each event, its arrival minus the commit time
#    the event carries; p50 and p99 (goal: p99 under 20 ms).
set -euo pipefail
cd "$(dirname "$0")/.."
CHANGES=${CHANGES:-200000}
SECONDS_LAT=${LATENCY_SECONDS:-20}
source bench/common.sh
[ -x build/tools/webhook_receiver ] || ninja -C build webhook_receiver_build >/dev/null
SECRET="whsec_$(openssl rand -base64 32)"

build/tools/webhook_receiver -listen 127.0.0.1:0 -port-file "$work/port" -secret "$SECRET" \
  2>"$work/receiver.log" &
RECEIVER=$!
trap 'kill $RECEIVER 2>/dev/null; scripts/pgtmp.sh stop "$work/pg"; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.05; done
HOOK="http://127.0.0.1:$(cat "$work/port")"
stats() { curl -s "$HOOK/_stats"; }
reset() { curl -s -X POST "$HOOK/_stats/reset" >/dev/null; }
export WEBHOOK_SECRET=$SECRET

create_items_and_slots hook1
psql -q -d bench -c "SELECT 'slot' FROM pg_create_logical_replication_slot('hook100', 'pgoutput')" >/dev/null
write_backlog $((CHANGES / 100))
bench_pipeline bench_jsonl pgflow_bench "{jsonl: {path: /dev/null}}" >"$work/jsonl.yaml"
bench_pipeline bench_hook1 hook1 \
  "{webhook: {url: \"$HOOK/hook\", secret: \"\${WEBHOOK_SECRET}\", batch: 1, concurrency: 32}}" \
  >"$work/hook1.yaml"
bench_pipeline bench_hook100 hook100 \
  "{webhook: {url: \"$HOOK/hook\", secret: \"\${WEBHOOK_SECRET}\", batch: 100}}" \
  >"$work/hook100.yaml"
jsonl_b=$(timed_pgflow "$work/jsonl.yaml" "$work/jsonl.log")
reset
hook1_b=$(timed_pgflow "$work/hook1.yaml" "$work/hook1.log")
hook1_s=$(stats)
reset
hook100_b=$(timed_pgflow "$work/hook100.yaml" "$work/hook100.log")
hook100_s=$(stats)
python3 - "$CHANGES" "$jsonl_b" "$hook1_b" "$hook100_b" "$hook1_s" "$hook100_s" <<'PY'
import json, sys
n = int(sys.argv[1])
(jw, jc), (w1, c1), (w100, c100) = (map(float, a.split(",")) for a in sys.argv[2:5])
s1, s100 = json.loads(sys.argv[5]), json.loads(sys.argv[6])
print(f"1. backlog of {n:,} changes")
print(f"pgflow -> jsonl /dev/null (reference): {jw:7.2f}s {n / jw:>10,.0f} events/s (pgflow CPU {jc:.1f}s)")
print(f"pgflow -> webhook, batch 1:            {w1:7.2f}s {n / w1:>10,.0f} events/s (pgflow CPU {c1:.1f}s; "
      f"{s1['requests']:,} requests, {s1['invalid']} invalid)")
print(f"pgflow -> webhook, batch 100:          {w100:7.2f}s {n / w100:>10,.0f} events/s (pgflow CPU {c100:.1f}s; "
      f"{s100['requests']:,} requests, {s100['invalid']} invalid)")
print(f"batch 100 / jsonl: {jw / w100:.3f} (goal >= 0.8); batch 1: {n / w1:,.0f} events/s (goal > 10,000)")
for name, s in (("batch 1", s1), ("batch 100", s100)):
    if s["events"] != n or s["invalid"] != 0:
        sys.exit(f"{name}: the receiver took {s['events']} events ({s['invalid']} invalid) for {n} changes")
PY

# 2. Commit to delivered, at 1,000 writes a second.
psql -q -d bench >/dev/null <<SQL
CREATE TABLE lat (id bigint PRIMARY KEY, note text);
SELECT 'slot' FROM pg_create_logical_replication_slot('lat_bench', 'pgoutput');
ALTER PUBLICATION pgflow_bench ADD TABLE lat;
SQL
latency_pipeline "{webhook: {url: \"$HOOK/hook\", secret: \"\${WEBHOOK_SECRET}\"}}" >"$work/lat.yaml"
"$PGFLOW_BINARY" run "$work/lat.yaml" --progress 0 2>"$work/lat.log" &
PGFLOW=$!
for _ in $(seq 200); do grep -q "streaming" "$work/lat.log" && break; sleep 0.05; done
reset
python3 - "$SECONDS_LAT" <<'PY'
# 10 single-row transactions every 10 ms, through one psql session.
import subprocess, sys, time
n = int(float(sys.argv[1]) * 100)
psql = subprocess.Popen(["psql", "-q", "-d", "bench"], stdin=subprocess.PIPE, text=True)
start = time.time()
for k in range(n):
    psql.stdin.write("".join(f"INSERT INTO lat VALUES ({k * 10 + i}, 'x');\n" for i in range(10)))
    psql.stdin.flush()
    time.sleep(max(0, start + (k + 1) * 0.01 - time.time()))
psql.stdin.close()
psql.wait()
PY
sleep 1
lat_s=$(stats)
kill -INT $PGFLOW; wait $PGFLOW || true
python3 - "$SECONDS_LAT" "$lat_s" <<'PY'
import json, sys
seconds, s = float(sys.argv[1]), json.loads(sys.argv[2])
lat = s["latency_ms"]
print(f"2. commit -> delivered at 1,000 writes/s for {seconds:.0f}s, batch 1")
print(f"pgflow -> webhook: p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms "
      f"over {lat['count']:,} events (goal: p99 < 20 ms)")
if lat["count"] != int(seconds * 1000):
    sys.exit(f"the receiver took {lat['count']} events for {int(seconds * 1000)} writes")
PY
