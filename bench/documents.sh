#!/usr/bin/env bash
# Benchmark: joined documents (`documents:`, docs/guides/documents.md) against PGSync 7.3.0
# (PyPI `pgsync`, in its own venv beside the build, with a private Redis it needs), in one run
# on one throwaway PostgreSQL and one OpenSearch node (scripts/ostmp.sh, OPENSEARCH_HEAP
# default 1g). Each tool follows a database of its own, made the same (bench for pgflow,
# bench_pgsync, a copy of it, for PGSync), so that neither's writes, triggers or slot weigh on
# the other's. The same document for both: an order (id, placed_at, status) with its customer
# (name, email) as an object and its lines (line, qty) as an array, each line with its product
# (title, price) as an object, over customers, products, orders and order_lines (indexes on
# orders(customer_id) and order_lines(sku)). Each index: 1 shard, 0 replicas, refresh 1s;
# otherwise each tool's defaults (pgflow's fast_load: no refresh during its snapshot).
#
# 1. Initial load of ORDERS (default 200,000; the issue's scale is 1,000,000) orders of LINES
#    (default 5) lines each, CUSTOMERS (default ORDERS / 20) customers and PRODUCTS (default
#    ORDERS / 200) products, one tool after the
#    other: PGSync `bootstrap` (its triggers, view and slot), then pgflow `run --until` the
#    position before it (the snapshot, then exit) into bench_orders, then `pgsync --daemon`
#    until _count of pgsync_orders is ORDERS.
#    Documents/s of each, the CPU seconds of its own processes and of PostgreSQL meanwhile, and
#    whether each index then holds exactly the documents a SQL query renders.
# 2. Streaming, one tool after the other (both running, the other's database quiet): the same
#    CHANGES (default 5,000) changes in transactions of 10 through one psql session into the
#    tool's database (45% an order's status, 20% a new order with 3 lines, 15% an order
#    deleted with its lines, 19% a customer's name, on ~20 orders each, 1% a product's title,
#    on ~600 orders each; every new value unique, so a lost update shows), then one last
#    transaction setting a sentinel order's status. From the first change, the seconds until
#    the tool's index holds exactly the documents the SQL query renders at the end, measured to the
#    tool's last write (the index's _stats, read every 0.25 s): once the sentinel shows in an
#    index and it has had no write for 1 s, the whole index is read and compared (PGSync's
#    _meta stripped, lines taken in line order, times as instants, numbers as decimals); again
#    after its next writes (or 10 s), until it is exact or CONVERGE_TIMEOUT (default 900)
#    seconds have passed. Documents missing, extra and different are reported, and the
#    documents each tool wrote (indexed and deleted). PGSync's triggers run on every write of
#    its workload (the time to write it counts), pgflow has none.
# 3. CPU seconds (user + system, /proc) of pgflow's process and of PGSync's (its daemon, and its
#    bootstrap in 1) in each part.
# The defaults took about 7 minutes on 2 cores with 3 lines an order, most of it PGSync's,
# whose streaming goes at about 30 changes/s here: each 5,000 more CHANGES add about 3 minutes
# (CONVERGE_TIMEOUT bounds the wait). ORDERS=1000000 takes about 36 minutes, 10 of them the
# checker's (SQL renders and whole-index reads). Quick run: ORDERS=5000 CHANGES=2000 (about 2
# minutes).
# LOGS=dir keeps the logs of pgflow, PGSync and Redis there. The machine may be shared: the
# figures are of one run, side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
ORDERS=${ORDERS:-200000}
CUSTOMERS=${CUSTOMERS:-$((ORDERS / 20))}
PRODUCTS=${PRODUCTS:-$((ORDERS / 200))}
LINES=${LINES:-5}
CHANGES=${CHANGES:-5000}
LOAD_TIMEOUT=${LOAD_TIMEOUT:-900}
CONVERGE_TIMEOUT=${CONVERGE_TIMEOUT:-900}
PGSYNC_VERSION=7.3.0
source bench/common.sh

# PGSync's venv (Debian's python3: the one in PATH may be another build) and Redis.
VENV=$(realpath -m "$(dirname "$PGFLOW_BINARY")/pgsync-venv")
installed=$("$VENV/bin/python" -c 'import pgsync; print(pgsync.__version__)' 2>/dev/null || true)
if [ "$installed" != "$PGSYNC_VERSION" ]; then
  echo "installing pgsync $PGSYNC_VERSION from PyPI"
  rm -rf "$VENV" && /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "pgsync==$PGSYNC_VERSION" </dev/null
fi
if ! command -v redis-server >/dev/null; then
  echo "installing redis-server (Debian)"
  DEBIAN_FRONTEND=noninteractive apt-get -qq install -y redis-server >/dev/null 2>&1 ||
    { apt-get -qq update >/dev/null &&
      DEBIAN_FRONTEND=noninteractive apt-get -qq install -y redis-server >/dev/null; }
fi
[ "$(psql -Atq -d bench -c 'SHOW wal_level')" = logical ] ||
  { echo "PGSync needs wal_level = logical" >&2; exit 1; }

pgflow_pid='' pgsync_pid='' redis_pid=''
stop_process() {  # pid signal: signal it, wait up to 20 s, then kill it
  [ -n "$1" ] || return 0
  kill "-$2" "$1" 2>/dev/null || return 0
  for _ in $(seq 200); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}
cleanup() {
  stop_process "$pgsync_pid" TERM
  stop_process "$pgflow_pid" INT
  stop_process "$redis_pid" TERM
  if [ -n "${LOGS:-}" ]; then mkdir -p "$LOGS" && cp "$work"/*.log "$LOGS"/ 2>/dev/null || true; fi
  scripts/ostmp.sh stop "$work/os"
  scripts/pgtmp.sh stop "$work/pg"
  rm -rf "$work"
}
trap cleanup EXIT
export OPENSEARCH_HEAP=${OPENSEARCH_HEAP:-1g}
OSPORT=$(scripts/ostmp.sh start "$work/os")
OS="http://127.0.0.1:$OSPORT"
echo "OpenSearch node on $OS"
read -r REDIS_PORT < <(scripts/free_ports 1)
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --daemonize no \
  --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
redis_up() { [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }
for _ in $(seq 100); do redis_up && break; sleep 0.1; done
redis_up || { cat "$work/redis.log" >&2; exit 1; }

echo "creating $ORDERS orders of $LINES lines, $CUSTOMERS customers, $PRODUCTS products"
psql -q -d bench -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL);
CREATE TABLE products (id text PRIMARY KEY, title text NOT NULL, price numeric(10,2) NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL,
                     placed_at timestamptz NOT NULL, status text NOT NULL);
CREATE TABLE order_lines (order_id bigint NOT NULL, line int NOT NULL, sku text NOT NULL,
                          qty int NOT NULL, PRIMARY KEY (order_id, line));
CREATE INDEX ON orders (customer_id);
CREATE INDEX ON order_lines (sku);
INSERT INTO customers SELECT g, 'customer ' || g, 'c' || g || '@example.com'
  FROM generate_series(1, $CUSTOMERS) g;
INSERT INTO products SELECT 'sku-' || g, 'product ' || g, (g % 500) + 0.99
  FROM generate_series(1, $PRODUCTS) g;
INSERT INTO orders SELECT g, 1 + g % $CUSTOMERS,
  timestamptz '2025-01-01 00:00:00+00' + g * interval '37 seconds',
  (ARRAY['open', 'paid', 'shipped'])[1 + g % 3] FROM generate_series(1, $ORDERS) g;
INSERT INTO order_lines SELECT o, l, 'sku-' || (1 + (o * 7 + l * 13) % $PRODUCTS), 1 + (o + l) % 5
  FROM generate_series(1, $ORDERS) o, generate_series(1, $LINES) l;
VACUUM ANALYZE;
SQL
psql -q -d postgres -c "CREATE DATABASE bench_pgsync TEMPLATE bench"

# The same document for both.
cat >"$work/pgflow.yaml" <<YAML
pipeline: bench_documents
source:
  postgres:
    url: postgres://postgres@127.0.0.1:$PGPORT/bench
    tables: [public.orders, public.customers, public.products, public.order_lines]
documents:
  orders:
    table: public.orders
    fields: [id, placed_at, status]
    children:
      customer: {table: public.customers, on: {id: customer_id}, one: true, fields: [name, email]}
      lines:
        table: public.order_lines
        on: {order_id: id}
        fields: [line, qty]
        children:
          product: {table: public.products, on: {id: sku}, one: true, fields: [title, price]}
sinks:
  search:
    opensearch: {url: "$OS", index: "bench_{document}", documents: [orders], replicas: 0}
YAML
cat >"$work/schema.json" <<'JSON'
[{"database": "bench_pgsync", "index": "pgsync_orders",
  "setting": {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "1s"},
  "nodes": {"table": "orders", "columns": ["id", "placed_at", "status"],
    "children": [
      {"table": "customers", "label": "customer", "columns": ["name", "email"],
       "relationship": {"variant": "object", "type": "one_to_one",
                        "foreign_key": {"parent": ["customer_id"], "child": ["id"]}}},
      {"table": "order_lines", "label": "lines", "columns": ["line", "qty"],
       "relationship": {"variant": "object", "type": "one_to_many",
                        "foreign_key": {"parent": ["id"], "child": ["order_id"]}},
       "children": [
         {"table": "products", "label": "product", "columns": ["title", "price"],
          "relationship": {"variant": "object", "type": "one_to_one",
                           "foreign_key": {"parent": ["sku"], "child": ["id"]}}}]}]}}]
JSON
# PGSync reads its settings from the environment (and a .env in its working directory: $work
# has none); its checkpoint file goes to $work.
export OPENSEARCH=true PG_HOST=127.0.0.1 PG_PORT=$PGPORT PG_USER=postgres PG_PASSWORD='' \
  ELASTICSEARCH_HOST=127.0.0.1 ELASTICSEARCH_PORT=$OSPORT ELASTICSEARCH_SCHEME=http \
  REDIS_HOST=127.0.0.1 REDIS_PORT=$REDIS_PORT CHECKPOINT_PATH=$work/

# The comparison of an index with the documents SQL renders, and the wait for exactness.
cat >"$work/check.py" <<'PY'
# check.py OS_URL compare INDEX=DATABASE...
#   prints, per index, "INDEX exact N" or "INDEX wrong missing extra differ EXAMPLE", the index
#   compared with the documents SQL renders from DATABASE
# check.py OS_URL converge T0 TIMEOUT SENTINEL NAME=INDEX=DATABASE=PID=CPU0=WRITES0...
#   waits until each index is exact (see the header of bench/documents.sh); prints per NAME
#   "NAME exact SECONDS CPU LOOKS FOUND" or "NAME wrong SECONDS CPU LOOKS missing extra differ
#   EXAMPLE": SECONDS from T0 (epoch seconds) to the index's last write (exact) or to the
#   deadline (wrong), CPU the process tree's CPU seconds since CPU0 by then, LOOKS the
#   whole-index comparisons made, FOUND the seconds from T0 when one found the index exact.
#   WRITES0 is the index's count of writes at T0.
import datetime, decimal, http.client, json, subprocess, sys, threading, time, urllib.parse
sys.path.insert(0, "bench")  # (run from the tree's root, as this script is)
sys.dont_write_bytecode = True  # (no bench/__pycache__ left in the tree)
from process_cpu import process_tree_cpu

QUERY = """
SELECT jsonb_build_object('id', o.id, 'placed_at', o.placed_at, 'status', o.status,
  'customer', (SELECT jsonb_build_object('name', c.name, 'email', c.email)
               FROM customers c WHERE c.id = o.customer_id),
  'lines', coalesce((SELECT jsonb_agg(jsonb_build_object('line', l.line, 'qty', l.qty,
      'product', (SELECT jsonb_build_object('title', p.title, 'price', p.price)
                  FROM products p WHERE p.id = l.sku)) ORDER BY l.line)
    FROM order_lines l WHERE l.order_id = o.id), '[]'))
FROM orders o"""
url = urllib.parse.urlparse(sys.argv[1])

def normalize(doc):
    doc = {k: v for k, v in doc.items() if k != "_meta"}
    if isinstance(doc.get("placed_at"), str):
        doc["placed_at"] = datetime.datetime.fromisoformat(doc["placed_at"])
    if isinstance(doc.get("lines"), list):
        doc["lines"] = sorted(doc["lines"], key=lambda line: line.get("line", 0))
    return doc

def expected(database):
    out = subprocess.run(["psql", "-Atq", "-d", database, "-c", QUERY], check=True,
                         capture_output=True, text=True).stdout
    docs = {}
    for line in out.splitlines():
        doc = json.loads(line, parse_float=decimal.Decimal)
        docs[str(doc["id"])] = normalize(doc)
    return docs

local = threading.local()  # a connection for each thread
def call(method, path, body=None):
    if not hasattr(local, "conn"):
        local.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
    local.conn.request(method, path, json.dumps(body) if body is not None else None,
                       {"Content-Type": "application/json"})
    answer = local.conn.getresponse()
    return answer.status, json.loads(answer.read() or b"{}", parse_float=decimal.Decimal)

def documents(index):
    call("POST", f"/{index}/_refresh")
    status, page = call("POST", f"/{index}/_search?scroll=2m", {"size": 5000, "sort": ["_doc"]})
    if status != 200:
        return {}
    docs = {}
    while page["hits"]["hits"]:
        for hit in page["hits"]["hits"]:
            docs[hit["_id"]] = normalize(hit["_source"])
        _, page = call("POST", "/_search/scroll", {"scroll": "2m", "scroll_id": page["_scroll_id"]})
    call("DELETE", "/_search/scroll", {"scroll_id": page["_scroll_id"]})
    return docs

def compare(want, got):  # (missing, extra, differ, example)
    missing = sorted(want.keys() - got.keys(), key=int)
    extra = sorted(got.keys() - want.keys(), key=int)
    differ = sorted((k for k in want.keys() & got.keys() if want[k] != got[k]), key=int)
    example = ""
    for kind, ids in (("differs", differ), ("missing", missing), ("extra", extra)):
        if ids:
            k = ids[0]
            example = (f"id {k} {kind}: expected {json.dumps(want.get(k), default=str)}, "
                       f"indexed {json.dumps(got.get(k), default=str)}")
            break
    return len(missing), len(extra), len(differ), example

mode = sys.argv[2]
if mode == "compare":
    for spec in sys.argv[3:]:
        index, database = spec.split("=")
        want = expected(database)
        missing, extra, differ, example = compare(want, documents(index))
        if missing or extra or differ:
            print(index, "wrong", missing, extra, differ, example)
        else:
            print(index, "exact", len(want))
    sys.exit(0)

t0, timeout, sentinel = float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]

def writes(index):  # documents indexed and deleted so far
    _, stats = call("GET", f"/{index}/_stats/indexing")
    counts = stats["_all"]["primaries"]["indexing"]
    return counts["index_total"] + counts["delete_total"]

class Watch:
    """One index: a thread of its own reads its count of writes every 0.25 s from T0 on, so that
    the time and CPU of its last write are known however long a comparison takes; the calling
    thread compares (step) once the index is quiet."""
    def __init__(self, spec):
        self.name, self.index, self.database, self.pid, cpu0, writes0 = spec.split("=")
        self.cpu0, self.writes = float(cpu0), int(writes0)
        self.want = None  # the documents SQL renders (the workload is over: read once, late)
        self.changed, self.used = t0, 0.0  # the last write seen: when, the CPU by then
        self.looked, self.looks = None, 0  # the last comparison: when (None: none since a write)
        self.now_used = 0.0
        self.lock, self.done = threading.Lock(), False
        threading.Thread(target=self.poll, daemon=True).start()

    def cpu(self):
        try:
            self.now_used = process_tree_cpu(self.pid) - self.cpu0
        except OSError:  # the process is gone: its index stays as it is until the deadline
            pass
        return self.now_used

    def poll(self):
        while not self.done:
            seen, now = writes(self.index), time.time()
            if seen != self.writes:
                used = self.cpu()
                with self.lock:
                    self.writes, self.changed, self.used, self.looked = seen, now, used, None
            time.sleep(0.25)

    def step(self):  # True once reported
        now = time.time()
        with self.lock:
            changed, looked, seen = self.changed, self.looked, self.writes
        late = now - t0 > timeout
        quiet = now - changed >= 1
        if not late and not (quiet and (looked is None or now - looked >= 10)):
            return False
        if not late and looked is None:  # the sentinel first
            call("POST", f"/{self.index}/_refresh")
            _, doc = call("GET", f"/{self.index}/_doc/{sentinel}")
            if doc.get("_source", {}).get("status") != "sentinel":
                return False
        if self.want is None:
            self.want = expected(self.database)
        with self.lock:
            self.looked, self.looks = now, self.looks + 1
        missing, extra, differ, example = compare(self.want, documents(self.index))
        with self.lock:
            changed, used, written = self.changed, self.used, self.writes != seen
        if not (missing or extra or differ) and not written:  # (else: again, once quiet)
            self.done = True
            print(self.name, "exact", f"{changed - t0:.2f}", f"{used:.2f}", self.looks,
                  f"{time.time() - t0:.2f}", flush=True)
            return True
        if late:
            self.done = True
            print(self.name, "wrong", f"{now - t0:.2f}", f"{self.cpu():.2f}", self.looks, missing,
                  extra, differ, example, flush=True)
            return True
        return False

def watch(spec):  # each index in a thread of its own: one's comparison does not hold up the other
    w = Watch(spec)
    while not w.step():
        time.sleep(0.25)

threads = [threading.Thread(target=watch, args=(spec,)) for spec in sys.argv[6:]]
for t in threads:
    t.start()
for t in threads:
    t.join()
PY

count() {  # documents in index $1 (0 while it is missing)
  curl -s -X POST "$OS/$1/_refresh" >/dev/null
  curl -s "$OS/$1/_count" |
    python3 -c 'import json, sys; print(json.load(sys.stdin).get("count", 0))'
}
timed_cmd() {  # log command...: runs it, prints "wall,cpu" (its own and its children's CPU)
  local log=$1; shift
  python3 - "$log" "$@" <<'PY' || { cat "$log" >&2; exit 1; }
import resource, subprocess, sys, time
start = time.monotonic()
with open(sys.argv[1], "w") as log:
    code = subprocess.call(sys.argv[2:], stdout=log, stderr=log)
wall = time.monotonic() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{wall:.3f},{usage.ru_utime + usage.ru_stime:.3f}")
sys.exit(code)
PY
}

# 1. The initial loads, one after the other: PGSync's bootstrap first (triggers on the tables,
# its view and slot), then pgflow's load, then PGSync's daemon.
echo "1. initial load of $ORDERS orders"
pg0=$(cluster_cpu "$work/pg")
bootstrap=$(cd "$work" &&
  timed_cmd "$work/pgsync-bootstrap.log" "$VENV/bin/bootstrap" --config schema.json)
pg1=$(cluster_cpu "$work/pg")
END=$(psql -Atq -d bench -c "SELECT pg_current_wal_lsn()")
pgflow_load=$(timed_pgflow "$work/pgflow.yaml" "$work/pgflow-load.log")
pg2=$(cluster_cpu "$work/pg")

# pgflow streams from here on (it resumes its slot: no second snapshot).
"$PGFLOW_BINARY" run "$work/pgflow.yaml" --progress 10 2>"$work/pgflow.log" &
pgflow_pid=$!
streaming() { grep -q "replication stream: streaming" "$work/pgflow.log"; }
for _ in $(seq 300); do streaming && break; sleep 0.1; done
streaming || { cat "$work/pgflow.log" >&2; exit 1; }

pg3=$(cluster_cpu "$work/pg")
t0=$(now)
(cd "$work" && exec "$VENV/bin/pgsync" --config schema.json --daemon) >"$work/pgsync.log" 2>&1 &
pgsync_pid=$!
while [ "$(count pgsync_orders)" -lt "$ORDERS" ]; do
  kill -0 "$pgsync_pid" 2>/dev/null || { tail -n 40 "$work/pgsync.log" >&2; exit 1; }
  python3 -c "import sys, time; sys.exit(time.time() - $t0 > $LOAD_TIMEOUT)" ||
    { echo "PGSync did not load $ORDERS documents in ${LOAD_TIMEOUT}s; its log:" >&2
      tail -n 20 "$work/pgsync.log" >&2; exit 1; }
  sleep 0.5
done
t1=$(now)
pgsync_daemon_cpu=$(process_tree_cpu "$pgsync_pid" 2)
pg4=$(cluster_cpu "$work/pg")
python3 "$work/check.py" "$OS" compare bench_orders=bench pgsync_orders=bench_pgsync \
  >"$work/load-check.txt"

python3 - "$ORDERS" "$bootstrap" "$pgflow_load" "$t0" "$t1" "$pgsync_daemon_cpu" \
  "$pg0" "$pg1" "$pg2" "$pg3" "$pg4" "$work/load-check.txt" >"$work/load.txt" <<'PY'
import sys
n = int(sys.argv[1])
boot_wall, boot_cpu = map(float, sys.argv[2].split(","))
flow_wall, flow_cpu = map(float, sys.argv[3].split(","))
t0, t1, daemon_cpu = map(float, sys.argv[4:7])
pg0, pg1, pg2, pg3, pg4 = map(float, sys.argv[7:12])
check = dict(line.split(" ", 1) for line in open(sys.argv[12]).read().splitlines())
def verdict(index):
    kind, *rest = check[index].split(" ", 4)
    if kind == "exact":
        return "index exact"
    return f"index NOT exact: {rest[0]} missing, {rest[1]} extra, {rest[2]} different; {rest[3]}"
sync_wall, sync_cpu = boot_wall + (t1 - t0), boot_cpu + daemon_cpu
print(f"pgflow run --until:        {flow_wall:7.2f}s {n / flow_wall:>7,.0f} docs/s; "
      f"CPU pgflow {flow_cpu:6.2f}s, PostgreSQL {pg2 - pg1:6.2f}s; {verdict('bench_orders')}")
print(f"PGSync bootstrap + daemon: {sync_wall:7.2f}s {n / sync_wall:>7,.0f} docs/s; "
      f"CPU PGSync {sync_cpu:6.2f}s, PostgreSQL {(pg1 - pg0) + (pg4 - pg3):6.2f}s "
      f"(bootstrap {boot_wall:.2f}s); {verdict('pgsync_orders')}")
print(f"RATIO {sync_wall / flow_wall:.3f} {flow_cpu / sync_cpu:.3f}")
PY
grep -v '^RATIO' "$work/load.txt"

# 2. Streaming, both running.
python3 - "$ORDERS" "$CUSTOMERS" "$PRODUCTS" "$CHANGES" \
  >"$work/workload.sql" 2>"$work/workload.txt" <<'PY'
import random, sys
orders, customers, products, changes = map(int, sys.argv[1:])
rnd = random.Random(51)
live, where = list(range(1, orders + 1)), {}
where.update((k, i) for i, k in enumerate(live))
next_id = orders + 1
kinds = dict.fromkeys(["status updates", "new orders", "deleted orders", "customer names",
                       "product titles"], 0)
def remove(k):  # from live, in O(1)
    i, last = where.pop(k), live.pop()
    if last != k:
        live[i], where[last] = last, i
out = []
for n in range(changes):
    if n % 10 == 0:
        out.append("BEGIN;")
    r = rnd.random()
    if r < 0.45:
        kind = "status updates"
        out.append(f"UPDATE orders SET status = 'status {n}' WHERE id = {rnd.choice(live)};")
    elif r < 0.65:
        kind, k = "new orders", next_id
        next_id += 1
        out.append(f"INSERT INTO orders VALUES ({k}, {rnd.randint(1, customers)}, "
                   f"timestamptz '2026-01-01 00:00:00+00' + {n} * interval '1 second', 'new {n}');")
        out.append("INSERT INTO order_lines VALUES " + ", ".join(
            f"({k}, {line}, 'sku-{rnd.randint(1, products)}', {rnd.randint(1, 9)})"
            for line in (1, 2, 3)) + ";")
        where[k] = len(live)
        live.append(k)
    elif r < 0.80:
        kind, k = "deleted orders", rnd.choice(live)
        remove(k)
        out.append(f"DELETE FROM order_lines WHERE order_id = {k}; "
                   f"DELETE FROM orders WHERE id = {k};")
    elif r < 0.99:
        kind = "customer names"
        out.append(f"UPDATE customers SET name = 'customer name {n}' "
                   f"WHERE id = {rnd.randint(1, customers)};")
    else:
        kind = "product titles"
        out.append(f"UPDATE products SET title = 'product title {n}' "
                   f"WHERE id = 'sku-{rnd.randint(1, products)}';")
    kinds[kind] += 1
    if n % 10 == 9 or n == changes - 1:
        out.append("COMMIT;")
sentinel = rnd.choice(live)
out.append(f"UPDATE orders SET status = 'sentinel' WHERE id = {sentinel};")
print("\n".join(out))
print(sentinel, len(live), ", ".join(f"{v} {k}" for k, v in kinds.items()), file=sys.stderr)
PY
read -r sentinel expected_n mix <"$work/workload.txt"
echo "2. streaming: $CHANGES changes in transactions of 10 ($mix), $expected_n orders at the end;"
echo "   each tool alone on its database"
writes() {  # documents indexed and deleted in index $1 so far
  curl -s "$OS/$1/_stats/indexing" | python3 -c '
import json, sys
d = json.load(sys.stdin)["_all"]["primaries"]["indexing"]
print(d["index_total"] + d["delete_total"])'
}
# stream NAME INDEX DATABASE PID: writes the workload into DATABASE and waits until INDEX is
# exact; appends the checker's line, the seconds the workload took to write and the documents
# the tool wrote meanwhile to $work/converge.txt.
stream() {
  local name=$1 index=$2 database=$3 pid=$4 writes0 cpu0 w0 w1
  writes0=$(writes "$index")
  cpu0=$(process_tree_cpu "$pid" 2)
  w0=$(now)
  psql -q -d "$database" -v ON_ERROR_STOP=1 -f "$work/workload.sql" >/dev/null
  w1=$(now)
  python3 "$work/check.py" "$OS" converge "$w0" "$CONVERGE_TIMEOUT" "$sentinel" \
    "$name=$index=$database=$pid=$cpu0=$writes0" >"$work/converge-$name.txt"
  kill -0 "$pid" 2>/dev/null || echo "$name exited; its log: $(tail -n 20 "$work/${name,,}.log")"
  echo "$(cat "$work/converge-$name.txt") $(python3 -c "print(f'{$w1 - $w0:.2f}')")" \
    "$(($(writes "$index") - writes0))" >>"$work/converge.txt"
}
: >"$work/converge.txt"
stream pgflow bench_orders bench "$pgflow_pid"
stream PGSync pgsync_orders bench_pgsync "$pgsync_pid"
sync_errors=$(grep -c ':ERROR:' "$work/pgsync.log" || true)
sync_404=$(grep ':ERROR:' "$work/pgsync.log" | grep -c "'result': 'not_found'" || true)

python3 - "$work/load.txt" "$work/converge.txt" "$sync_errors" "$sync_404" <<'PY'
import sys
load = open(sys.argv[1]).read().splitlines()
conv = {}
for line in open(sys.argv[2]).read().splitlines():
    name, kind, seconds, cpu, looks, *rest = line.split(" ")
    written, wrote = rest[-2:]  # the seconds the workload took to write, the writes meanwhile
    conv[name] = (kind, seconds, cpu, looks, " ".join(rest[:-2]), float(written), int(wrote))
errors, not_found = int(sys.argv[3]), int(sys.argv[4])
for name in ("pgflow", "PGSync"):
    kind, seconds, cpu, looks, rest, written, wrote = conv[name]
    if kind == "exact":
        what = (f"exact {float(seconds):7.2f}s after the first change (its last write; found so "
                f"at {float(rest):.2f}s, {looks} comparison(s))")
    else:
        missing, extra, differ, example = rest.split(" ", 3)
        what = (f"NOT exact {float(seconds):7.2f}s after the first change ({looks} comparison(s)): "
                f"{missing} missing, {extra} extra, {differ} different; {example}")
    print(f"{name:<7} {what}; the workload written in {written:.2f}s; CPU {float(cpu):6.2f}s; "
          f"{wrote:,} documents written or deleted")
if errors:
    print(f"PGSync logged {errors} errors, {not_found} of them deletes of a document it had not "
          f"indexed (404)")
_, load_rate, load_cpu = load[-1].split()
f, s = conv["pgflow"], conv["PGSync"]
print("summary, pgflow / PGSync, measured in this run:")
print(f"  initial load, documents/s:      {float(load_rate):7.2f} (higher: pgflow faster)")
print(f"  initial load, CPU of the tool:  {float(load_cpu):7.3f} (lower: pgflow cheaper)")
if f[0] == "exact" and s[0] == "exact":
    print(f"  streaming, seconds to exact:    {float(f[1]) / float(s[1]):7.3f} "
          "(lower: pgflow sooner)")
else:
    print(f"  streaming, seconds to exact:        n/a (pgflow {f[0]}, PGSync {s[0]})")
print(f"  streaming, CPU of the tool:     {float(f[2]) / max(float(s[2]), 0.01):7.3f} "
      "(lower: pgflow cheaper)")
PY
