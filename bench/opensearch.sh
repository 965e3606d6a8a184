#!/usr/bin/env bash
# Benchmark: the `opensearch` sink, in one run, on one throwaway PostgreSQL and one OpenSearch
# node (scripts/ostmp.sh, OPENSEARCH_HEAP default 1g):
#
# 1. The initial load: ROWS (default 2,000,000) rows of the streaming benchmarks' table (bigint
#    key, text, numeric, int, timestamptz, text[], jsonb) into an index, beside the same
#    snapshot into a `jsonl` sink writing to /dev/null (what pgflow costs without the node) and
#    beside a plain loader (the node's own ceiling here: the rows as PostgreSQL's row_to_json,
#    streamed into `_bulk` requests of 5 MB over one keep-alive connection by a short Python
#    script). Each index is created empty first with the same settings (1 shard, 0 replicas,
#    refresh every 30s). Documents/s for each, and pgflow's ratio to the loader (goal >= 0.8).
# 2. A backlog: CHANGES (default 500,000) changes written while pgflow is stopped (transactions
#    of 100: 60 inserts, 25 updates, 15 deletes), drained by `pgflow run --until` into the index,
#    and beside it the same backlog into jsonl /dev/null. Changes/s; the node's ceiling is the
#    loader's figure above.
# 3. Commit to searchable: LATENCY_SECONDS (default 20) of 1,000 single-row transactions a
#    second, streamed into an index refreshed every REFRESH (default 200ms: the shorter the
#    refresh, the less of either side's p99 is the refresh's phase); a reader polls the index
#    every 10 ms and takes, for each new document, now minus the moment its write was due.
#    Beside it, the same rate of documents written straight to the node by a script (the
#    node's own delay: the refresh interval). p50 and p99 of each (goal: pgflow's p99 under
#    the direct p99 + 50 ms). The reader counts a document once, whenever it turns up, in or
#    out of id order.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-2000000}
CHANGES=${CHANGES:-500000}
SECONDS_LAT=${LATENCY_SECONDS:-20}
REFRESH=${REFRESH:-200ms}
source bench/common.sh
export OPENSEARCH_HEAP=${OPENSEARCH_HEAP:-1g}
OSPORT=$(scripts/ostmp.sh start "$work/os")
trap 'scripts/ostmp.sh stop "$work/os"; scripts/pgtmp.sh stop "$work/pg"; rm -rf "$work"' EXIT
OS="http://127.0.0.1:$OSPORT"
echo "OpenSearch node on $OS"

create_loaded_items "$ROWS"

settings='{"settings":{"number_of_shards":1,"number_of_replicas":0,"refresh_interval":"30s"}}'
fresh_index() {
  curl -s -X DELETE "$OS/$1" >/dev/null
  curl -sf -X PUT "$OS/$1" -H 'Content-Type: application/json' -d "$settings" >/dev/null
}
count() {
  curl -s -X POST "$OS/$1/_refresh" >/dev/null
  curl -s "$OS/$1/_count" | python3 -c 'import json, sys; print(json.load(sys.stdin)["count"])'
}
timed() {  # seconds the command takes
  local t0 t1
  t0=$(now); "$@" >/dev/null 2>"$work/last.log" || { cat "$work/last.log" >&2; exit 1; }; t1=$(now)
  python3 -c "print(f'{$t1 - $t0:.3f}')"
}

# The plain loader.
fresh_index loader_items
cat >"$work/loader.py" <<'PY'
import http.client, subprocess, sys
port, limit = int(sys.argv[1]), 5 << 20
conn = http.client.HTTPConnection("127.0.0.1", port)
rows = subprocess.Popen(["psql", "-Atq", "-d", "bench", "-c",
                         "COPY (SELECT id, row_to_json(i) FROM items i) TO STDOUT"],
                        stdout=subprocess.PIPE, text=True)
body = []
size = 0
def send():
    global body, size
    conn.request("POST", "/_bulk", "".join(body).encode(), {"Content-Type": "application/x-ndjson"})
    answer = conn.getresponse().read()
    if b'"errors":true' in answer[:100]:
        sys.exit("item errors: " + answer[:500].decode())
    body, size = [], 0
for line in rows.stdout:
    key, doc = line.rstrip("\n").split("\t", 1)
    doc = doc.replace("\\\\", "\\")  # COPY's text format doubles backslashes
    item = '{"index":{"_index":"loader_items","_id":"%s"}}\n%s\n' % (key, doc)
    body.append(item)
    size += len(item)
    if size >= limit:
        send()
if body:
    send()
PY
loader_t=$(timed python3 "$work/loader.py" "$OSPORT")
loader_n=$(count loader_items)

run_pgflow() {  # sink YAML
  cat >"$work/load.yaml" <<YAML
pipeline: bench
source:
  postgres:
    url: postgres://postgres@127.0.0.1:$PGPORT/bench
    tables: [public.items]
    snapshot: {mode: only, workers: 2}
sinks:
  out: $1
YAML
  timed "$PGFLOW_BINARY" run "$work/load.yaml" --progress 0
}
jsonl_t=$(run_pgflow "{jsonl: {path: /dev/null}}")
fresh_index pgflow_items
pgflow_t=$(run_pgflow "{opensearch: {url: \"$OS\", index: pgflow_items}}")
pgflow_n=$(count pgflow_items)

python3 - "$ROWS" "$loader_t" "$loader_n" "$jsonl_t" "$pgflow_t" "$pgflow_n" <<'PY'
import sys
rows = int(sys.argv[1])
loader_t, loader_n, jsonl_t, pgflow_t, pgflow_n = map(float, sys.argv[2:])
print(f"1. initial load of {rows:,} rows")
print(f"plain _bulk loader (reference): {loader_t:7.2f}s {rows / loader_t:>10,.0f} docs/s ({loader_n:.0f} documents)")
print(f"pgflow -> jsonl /dev/null:      {jsonl_t:7.2f}s {rows / jsonl_t:>10,.0f} rows/s")
print(f"pgflow -> opensearch:           {pgflow_t:7.2f}s {rows / pgflow_t:>10,.0f} docs/s ({pgflow_n:.0f} documents)")
print(f"ratio to the plain loader: {loader_t / pgflow_t:.3f} (goal >= 0.8)")
PY
LOADER_RATE=$(python3 -c "print(f'{$ROWS / $loader_t:.0f}')")

# 2. The backlog: the loaded table makes way for the streaming benchmarks' own.
for i in loader_items pgflow_items; do curl -s -X DELETE "$OS/$i" >/dev/null; done
psql -q -d bench -c "DROP TABLE items"
create_items_and_slots os_bench
write_backlog $((CHANGES / 100))
fresh_index backlog_items
bench_pipeline bench_jsonl pgflow_bench "{jsonl: {path: /dev/null}}" >"$work/jsonl.yaml"
bench_pipeline bench_os os_bench "{opensearch: {url: \"$OS\", index: backlog_items}}" >"$work/os.yaml"
jsonl_b=$(timed_pgflow "$work/jsonl.yaml" "$work/jsonl.log")
os_b=$(timed_pgflow "$work/os.yaml" "$work/os.log")
backlog_n=$(count backlog_items)
rows_n=$(psql -Atq -d bench -c "SELECT count(*) FROM items")
python3 - "$CHANGES" "$jsonl_b" "$os_b" "$backlog_n" "$rows_n" "$LOADER_RATE" <<'PY'
import sys
n = int(sys.argv[1])
jw, jc = map(float, sys.argv[2].split(","))
ow, oc = map(float, sys.argv[3].split(","))
docs, rows, loader = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
print(f"2. backlog of {n:,} changes")
print(f"pgflow -> jsonl /dev/null:      {jw:7.2f}s {n / jw:>10,.0f} changes/s (pgflow CPU {jc:.1f}s)")
print(f"pgflow -> opensearch:           {ow:7.2f}s {n / ow:>10,.0f} changes/s (pgflow CPU {oc:.1f}s); "
      f"{docs} documents for {rows} rows")
print(f"the node's ceiling (the loader above): {loader:,.0f} docs/s")
if docs != rows:
    sys.exit("the index does not hold the table's rows")
PY

# 3. Commit to searchable, at 1,000 writes a second.
psql -q -d bench >/dev/null <<SQL
CREATE TABLE lat (id bigint PRIMARY KEY, ts timestamptz NOT NULL);
SELECT 'slot' FROM pg_create_logical_replication_slot('lat_bench', 'pgoutput');
ALTER PUBLICATION pgflow_bench ADD TABLE lat;
SQL
latency_pipeline "{opensearch: {url: \"$OS\", index: lat_items, refresh_interval: $REFRESH}, flush_interval: 10ms}" \
  >"$work/lat.yaml"
cat >"$work/latency.py" <<'PY'
# latency.py OS_URL INDEX SECONDS MODE: MODE "pgflow" inserts rows into PostgreSQL (psql, one
# transaction each), "direct" indexes the same documents straight into the node; both 10 every
# 10 ms. Each document carries the moment it was due (start + k * 10 ms), so that a writer held
# up (by a slow bulk request, or by pgflow waiting on one) counts against its side. A reader
# polls the index every 10 ms; prints "p50 p99 count" in milliseconds.
import datetime, http.client, json, subprocess, sys, threading, time, urllib.parse
url, index, seconds, mode = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
host = urllib.parse.urlparse(url)
n_total = int(seconds * 1000)
done = threading.Event()
latencies = []
def reader():
    # Documents may turn up out of id order (requests in parallel, a refresh between them):
    # every id from the lowest not yet seen is asked for, and each counted once.
    conn = http.client.HTTPConnection(host.hostname, host.port)
    low, seen_ids = 1, set()
    while len(latencies) < n_total and not (done.is_set() and time.time() > deadline):
        q = {"size": 5000, "sort": [{"id": "asc"}], "query": {"range": {"id": {"gte": low}}}}
        conn.request("POST", f"/{index}/_search", json.dumps(q), {"Content-Type": "application/json"})
        answer = json.loads(conn.getresponse().read())
        now = time.time()
        for hit in answer.get("hits", {}).get("hits", []):
            src = hit["_source"]
            if src["id"] in seen_ids:
                continue
            seen_ids.add(src["id"])
            ts = datetime.datetime.fromisoformat(src["ts"].replace("Z", "+00:00")).timestamp()
            latencies.append((now - ts) * 1000)
        while low in seen_ids:
            seen_ids.discard(low)
            low += 1
        time.sleep(0.01)
deadline = time.time() + seconds + 30
t = threading.Thread(target=reader)
t.start()
start = time.time()
if mode == "pgflow":
    psql = subprocess.Popen(["psql", "-q", "-d", "bench"], stdin=subprocess.PIPE, text=True)
    for k in range(n_total // 10):
        due = start + k * 0.01
        psql.stdin.write("".join(f"INSERT INTO lat VALUES ({k * 10 + j + 1}, to_timestamp({due:.6f}));\n"
                                 for j in range(10)))
        psql.stdin.flush()
        time.sleep(max(0, start + (k + 1) * 0.01 - time.time()))
    psql.stdin.close()
    psql.wait()
else:
    conn = http.client.HTTPConnection(host.hostname, host.port)
    for k in range(n_total // 10):
        due = datetime.datetime.fromtimestamp(start + k * 0.01, datetime.timezone.utc).isoformat()
        body = "".join(json.dumps({"index": {"_index": index, "_id": str(k * 10 + j + 1)}}) + "\n" +
                       json.dumps({"id": k * 10 + j + 1, "ts": due}) + "\n" for j in range(10))
        conn.request("POST", "/_bulk", body, {"Content-Type": "application/x-ndjson"})
        conn.getresponse().read()
        time.sleep(max(0, start + (k + 1) * 0.01 - time.time()))
done.set()
t.join()
xs = sorted(latencies)
pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")
print(f"{pick(0.5):.0f} {pick(0.99):.0f} {len(xs)}")
PY
curl -sf -X PUT "$OS/direct_lat" -H 'Content-Type: application/json' \
  -d '{"settings":{"number_of_shards":1,"number_of_replicas":0,"refresh_interval":"'"$REFRESH"'"},"mappings":{"properties":{"id":{"type":"long"},"ts":{"type":"date"}}}}' >/dev/null
direct=$(python3 "$work/latency.py" "$OS" direct_lat "$SECONDS_LAT" direct)
"$PGFLOW_BINARY" run "$work/lat.yaml" --progress 0 2>"$work/lat.log" &
lat_pid=$!
for _ in $(seq 100); do grep -q "replication stream: streaming" "$work/lat.log" && break; sleep 0.2; done
# pgflow creates the index at its first document: one row first, then the measured ones.
psql -q -d bench -c "INSERT INTO lat VALUES (0, now())"
for _ in $(seq 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' "$OS/lat_items")" = 200 ] && break; sleep 0.1; done
through=$(python3 "$work/latency.py" "$OS" lat_items "$SECONDS_LAT" pgflow)
kill -INT "$lat_pid"; wait "$lat_pid" || true
python3 - "$direct" "$through" "$SECONDS_LAT" "$REFRESH" <<'PY'
import sys
d50, d99, dn = sys.argv[1].split()
p50, p99, pn = sys.argv[2].split()
print(f"3. commit to searchable at 1,000 writes/s for {sys.argv[3]}s, refresh_interval {sys.argv[4]}")
print(f"straight into the node (reference): p50 {d50} ms, p99 {d99} ms ({dn} documents)")
print(f"through pgflow:                     p50 {p50} ms, p99 {p99} ms ({pn} documents)")
print(f"pgflow's p99 over the node's: {int(p99) - int(d99):+d} ms (goal < +50 ms)")
PY