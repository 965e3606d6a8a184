#!/usr/bin/env bash
# Benchmark: the initial load of a table into OpenSearch (the `opensearch` sink), beside the
# same snapshot into a `jsonl` sink writing to /dev/null (what pgflow costs without the node)
# and beside a plain loader (the node's own ceiling here: the rows as PostgreSQL's row_to_json,
# streamed into `_bulk` requests of 5 MB over one keep-alive connection by a short Python
# script), in one run, on one throwaway PostgreSQL and one OpenSearch node (scripts/ostmp.sh,
# OPENSEARCH_HEAP default 1g).
#
# ROWS (default 200,000; the issue's figure is 2,000,000) rows of the streaming benchmarks'
# table (bigint key, text, numeric, int, timestamptz, text[], jsonb). Each index is created
# empty first with the same settings (1 shard, 0 replicas, refresh every 30s). Prints documents/s
# for each and the ratio of pgflow's to the plain loader's (goal: at least 0.8).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-200000}
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
  timed build/pgflow run "$work/load.yaml" --progress 0
}
jsonl_t=$(run_pgflow "{jsonl: {path: /dev/null}}")
fresh_index pgflow_items
pgflow_t=$(run_pgflow "{opensearch: {url: \"$OS\", index: pgflow_items}}")
pgflow_n=$(count pgflow_items)

python3 - "$ROWS" "$loader_t" "$loader_n" "$jsonl_t" "$pgflow_t" "$pgflow_n" <<'PY'
import sys
rows = int(sys.argv[1])
loader_t, loader_n, jsonl_t, pgflow_t, pgflow_n = map(float, sys.argv[2:])
print(f"plain _bulk loader (reference): {loader_t:7.2f}s {rows / loader_t:>10,.0f} docs/s ({loader_n:.0f} documents)")
print(f"pgflow -> jsonl /dev/null:      {jsonl_t:7.2f}s {rows / jsonl_t:>10,.0f} rows/s")
print(f"pgflow -> opensearch:           {pgflow_t:7.2f}s {rows / pgflow_t:>10,.0f} docs/s ({pgflow_n:.0f} documents)")
print(f"ratio to the plain loader: {loader_t / pgflow_t:.3f} (goal >= 0.8)")
PY
