#!/usr/bin/env bash
# Benchmark: the kv cache against the servers its protocols come from, in one run.
#
# One throwaway PostgreSQL with ROWS rows (default 100,000; key: 12-digit text, as
# redis-benchmark's __rand_int__ writes it). pgflow caches them (kv sink); a redis-server is
# loaded with the same rows as hashes (and each row's JSON as a string, for GET), a memcached
# with the rows' JSON, an nginx with one file per row. pgflow, redis-server and memcached run
# with their default thread counts (KV_THREADS sets pgflow's kv threads, MEMCACHED_THREADS
# memcached's -t, KV_SPIN_US pgflow's spin_us). Then, 50 clients each:
#   Redis:     redis-benchmark HGET / HGETALL / GET on random real keys, without and with
#              pipelining (-P 16), pgflow and redis-server
#   memcached: kv_bench memcached (get, 1 and 16 per write), pgflow and memcached
#   HTTP:      wrk GET /items/<key> on random keys, pgflow and nginx (static files)
# and prints each pair and pgflow/reference (each measured twice, alternating, best kept).
# Then, commit→visible latency: UPDATEs committed at 1,000/s while polling HGET until each
# shows; p50 / p99 / max. Last, memory: for each of MEMORY_ROWS (default "500000 5000000") a
# table of that many rows (int key, two short texts, a numeric, a boolean, a timestamptz) is
# cached by a pgflow of its own (resident memory once it is up on the empty table, then again
# 10 s after it copied the full table at a restart: the growth, and the copy's rows/s), and
# loaded into a fresh redis-server as hashes of the same texts (resident memory before and
# after); the growth of each and pgflow/redis (goal: at most 1.2). ONLY=<regex> runs just the
# cases whose names match (ONLY=memcached, ONLY='HGET \(-P 1\)|latency', ONLY=memory).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-100000}
REQUESTS=${REQUESTS:-200000}
SECONDS_EACH=${SECONDS_EACH:-4}
BUILD=${BUILD:-build}
source bench/common.sh
KV_BENCH="$BUILD/kv_bench"
[ -x "$KV_BENCH" ] || ninja -C "$BUILD" kv_bench >/dev/null

read -r RPORT MPORT HPORT REDIS_PORT MEMC_PORT NGINX_PORT MEMORY_PORT MEMORY_REDIS_PORT < <(scripts/free_ports 8)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/pgtmp.sh stop "$work/pg"
  rm -rf "$work"
}
trap cleanup EXIT

echo "loading $ROWS rows"
psql -q -d bench <<SQL
CREATE TABLE items (id text PRIMARY KEY, name text, price numeric(12,2), qty int);
INSERT INTO items SELECT lpad(g::text, 12, '0'), 'item ' || g, g * 1.25, g % 100
  FROM generate_series(0, $ROWS - 1) g;
SQL

cat >"$work/kv.yaml" <<YAML
pipeline: kvbench
source:
  postgres:
    url: postgres://postgres@127.0.0.1:$PGPORT/bench
    tables: [public.items]
sinks:
  cache:
    flush_interval: 20ms
    kv: {redis: 127.0.0.1:$RPORT, memcached: 127.0.0.1:$MPORT, http: 127.0.0.1:$HPORT${KV_THREADS:+, threads: $KV_THREADS}${KV_SPIN_US:+, spin_us: $KV_SPIN_US}}
YAML
"$BUILD/pgflow" run "$work/kv.yaml" --progress 0 2>"$work/pgflow.log" &
pids+=($!)
for _ in $(seq 600); do
  [ "$(redis-cli -p "$RPORT" DBSIZE 2>/dev/null)" = "$ROWS" ] && break
  sleep 0.1
done
[ "$(redis-cli -p "$RPORT" DBSIZE)" = "$ROWS" ] || { cat "$work/pgflow.log"; exit 1; }

# The references, loaded with the same rows.
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  >"$work/redis.log" 2>&1 &
pids+=($!)
memcached -u "$(id -un)" -p "$MEMC_PORT" -l 127.0.0.1 -U 0 -m 1024 ${MEMCACHED_THREADS:+-t $MEMCACHED_THREADS} \
  >"$work/memcached.log" 2>&1 &
pids+=($!)
mkdir -p "$work/www/items"
psql -Atq -d bench -c "COPY (SELECT id, row_to_json(i)::text FROM (SELECT id, name, price::text AS price, qty FROM items) i) TO STDOUT" \
  >"$work/rows.tsv"
python3 - "$work" "$REDIS_PORT" "$MEMC_PORT" <<'PY'
import socket, sys, os, json
work, rport, mport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def bulk(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)
redis, memc = bytearray(), bytearray()
for line in open(os.path.join(work, "rows.tsv")):
    key, doc = line.rstrip("\n").split("\t", 1)
    row = json.loads(doc)
    redis += bulk("HSET", "items:" + key, "id", key, "name", row["name"], "price", row["price"],
                  "qty", str(row["qty"]))
    redis += bulk("SET", "json:items:" + key, doc)
    memc += b"set items:%s 0 0 %d noreply\r\n%s\r\n" % (key.encode(), len(doc), doc.encode())
    with open(os.path.join(work, "www", "items", key), "w") as f:
        f.write(doc)
redis += bulk("PING")
memc += b"version\r\n"
for port, data, end in ((rport, redis, b"+PONG\r\n"), (mport, memc, b"VERSION")):
    for _ in range(100):
        try:
            s = socket.create_connection(("127.0.0.1", port)); break
        except OSError:
            import time; time.sleep(0.1)
    s.sendall(data)
    got = b""
    while end not in got[-200:]:
        chunk = s.recv(1 << 20)
        if not chunk: break
        got += chunk
    s.close()
PY
cat >"$work/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  default_type application/json;
  server { listen 127.0.0.1:$NGINX_PORT; root $work/www; keepalive_requests 1000000; }
}
NGINX
nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
sleep 0.5
echo "references loaded: redis-server $(redis-cli -p "$REDIS_PORT" DBSIZE) keys," \
  "memcached $(printf 'stats\r\nquit\r\n' | python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1",'"$MEMC_PORT"')); s.sendall(sys.stdin.buffer.read()); print([l for l in s.makefile().read().splitlines() if "curr_items" in l][0].split()[2])') items," \
  "nginx $(ls "$work/www/items" | wc -l) files"

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
pair() {  # name pgflow reference
  printf '%-34s pgflow %10.0f   reference %10.0f   ratio %s\n' "$1" "$2" "$3" "$(ratio "$2" "$3")"
}
# The machine is shared: each pair is measured ROUNDS times (default 2), alternating pgflow and
# the reference, and the best of each kept, so that a burst of outside load does not decide a
# ratio.
ROUNDS=${ROUNDS:-2}
best() { python3 -c "import sys; print(max(float(x) for x in sys.argv[1:]))" "$@"; }
selected() { [ -z "${ONLY:-}" ] || [[ "$1" =~ $ONLY ]]; }
measure() {  # name "pgflow command" "reference command"
  selected "$1" || return 0
  local a=() b=()
  for _ in $(seq "$ROUNDS"); do
    a+=("$(eval "$2")")
    b+=("$(eval "$3")")
  done
  pair "$1" "$(best "${a[@]}")" "$(best "${b[@]}")"
}
rb() {  # port pipeline command...
  local port=$1 pipe=$2; shift 2
  redis-benchmark -p "$port" -c 50 -n "$REQUESTS" -r "$ROWS" -P "$pipe" -q --csv "$@" 2>/dev/null |
    tail -n 1 | cut -d, -f2 | tr -d '"'
}

echo
echo "requests per second, 50 clients ($(nproc) cores shared by client and server)"
for pipe in 1 16; do
  measure "redis HGET (-P $pipe)" "rb $RPORT $pipe HGET items:__rand_int__ name" \
    "rb $REDIS_PORT $pipe HGET items:__rand_int__ name"
  measure "redis HGETALL (-P $pipe)" "rb $RPORT $pipe HGETALL items:__rand_int__" \
    "rb $REDIS_PORT $pipe HGETALL items:__rand_int__"
  measure "redis GET row JSON (-P $pipe)" "rb $RPORT $pipe GET items:__rand_int__" \
    "rb $REDIS_PORT $pipe GET json:items:__rand_int__"
done
for pipe in 1 16; do
  measure "memcached get ($pipe per write)" \
    "$KV_BENCH memcached $MPORT 50 $SECONDS_EACH $pipe $ROWS | cut -d' ' -f1" \
    "$KV_BENCH memcached $MEMC_PORT 50 $SECONDS_EACH $pipe $ROWS | cut -d' ' -f1"
done
cat >"$work/random.lua" <<LUA
math.randomseed(os.time())
request = function()
  return wrk.format("GET", string.format("/items/%012d", math.random(0, $ROWS - 1)))
end
LUA
wrk_rate() {
  wrk -t 2 -c 50 -d "${SECONDS_EACH}s" -s "$work/random.lua" "http://127.0.0.1:$1" |
    awk '/Requests\/sec/ {print $2}'
}
measure "http GET /items/<key> (wrk)" "wrk_rate $HPORT" "wrk_rate $NGINX_PORT"

if selected "commit→visible latency"; then
  echo
  echo "commit→visible latency, UPDATEs at 1,000/s for 10 s, polled with HGET:"
  read -r p50 p99 max achieved < <("$KV_BENCH" latency "postgres://postgres@127.0.0.1:$PGPORT/bench" \
    "$RPORT" 1000 10 "$ROWS")
  echo "p50 ${p50} ms   p99 ${p99} ms   max ${max} ms   (${achieved} writes/s achieved)"
fi

selected memory || exit 0
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
# Waits until the cache on redis port $1 holds $2 keys (at most $3 s); 1 if it never does.
wait_keys() {
  for _ in $(seq $(($3 * 10))); do
    [ "$(redis-cli -p "$1" DBSIZE 2>/dev/null)" = "$2" ] && return 0
    sleep 0.1
  done
  return 1
}
# Starts pgflow on pipeline file $1 (its kv redis port $2) and waits until it holds $3 keys;
# sets MEM_PID, and MEM_SECONDS to the time that took.
start_cache() {
  local t0
  t0=$(now)
  "$BUILD/pgflow" run "$1" --progress 0 2>>"$work/memory-pgflow.log" &
  MEM_PID=$!
  pids+=("$MEM_PID")
  wait_keys "$2" "$3" 1200 || { echo "pgflow did not cache $3 rows:" >&2; tail -n 20 "$work/memory-pgflow.log" >&2; exit 1; }
  MEM_SECONDS=$(awk -v a="$t0" -v b="$(now)" 'BEGIN {print b - a}')
}
stop_cache() { kill "$MEM_PID"; wait "$MEM_PID" 2>/dev/null || true; }
echo
echo "memory: resident growth for the rows, pgflow's kv cache and redis-server (hashes)"
for n in ${MEMORY_ROWS:-500000 5000000}; do
  psql -q -d bench <<SQL
DROP TABLE IF EXISTS mem;
CREATE TABLE mem (id int PRIMARY KEY, name text, note text, price numeric(12,2), active boolean,
                  updated_at timestamptz);
SQL
  port=$MEMORY_PORT
  cat >"$work/memory.yaml" <<YAML
pipeline: kvmemory
source:
  postgres:
    url: postgres://postgres@127.0.0.1:$PGPORT/bench
    tables: [public.mem]
sinks:
  cache:
    kv: {redis: 127.0.0.1:$port, max_memory: 64GiB}
YAML
  # Up on the empty table: the resident memory before any row.
  start_cache "$work/memory.yaml" "$port" 0
  sleep 2
  before=$(rss_kb "$MEM_PID")
  stop_cache
  "$BUILD/pgflow" teardown "$work/memory.yaml" >>"$work/memory-pgflow.log" 2>&1
  psql -q -d bench -c "INSERT INTO mem SELECT g, 'name ' || g, 'note for row ' || g, g * 0.25,
    g % 2 = 0, '2026-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, $n) g"
  # The first copy, then a restart: the cache is loaded again, whole; 10 s later, its memory.
  start_cache "$work/memory.yaml" "$port" "$n"
  first_rate=$(awk -v n="$n" -v s="$MEM_SECONDS" 'BEGIN {printf "%.0f", n / s}')
  stop_cache
  start_cache "$work/memory.yaml" "$port" "$n"
  copy_rate=$(awk -v n="$n" -v s="$MEM_SECONDS" 'BEGIN {printf "%.0f", n / s}')
  sleep 10
  after=$(rss_kb "$MEM_PID")
  used=$(redis-cli -p "$port" INFO memory | awk -F: '/^used_memory:/ {print $2 + 0}')
  stop_cache
  "$BUILD/pgflow" teardown "$work/memory.yaml" >>"$work/memory-pgflow.log" 2>&1

  rport=$MEMORY_REDIS_PORT
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    >"$work/redis-memory.log" 2>&1 &
  rpid=$!
  pids+=("$rpid")
  for _ in $(seq 100); do redis-cli -p "$rport" PING >/dev/null 2>&1 && break; sleep 0.1; done
  rbefore=$(rss_kb "$rpid")
  # The same texts pgflow's HGET answers (NULL columns none here).
  psql -Atq -d bench -c "COPY (SELECT id, name, note, price, active, to_json(updated_at)#>>'{}' FROM mem) TO STDOUT" |
    python3 -c '
import sys
out = sys.stdout.buffer
names = [b"id", b"name", b"note", b"price", b"active", b"updated_at"]
for line in sys.stdin.buffer:
    values = line.rstrip(b"\n").split(b"\t")
    values[4] = b"true" if values[4] == b"t" else b"false"
    args = [b"HSET", b"mem:" + values[0]]
    for name, value in zip(names, values):
        args += [name, value]
    out.write(b"*%d\r\n" % len(args))
    for a in args:
        out.write(b"$%d\r\n%s\r\n" % (len(a), a))
' | redis-cli -p "$rport" --pipe >"$work/redis-pipe.log"
  [ "$(redis-cli -p "$rport" DBSIZE)" = "$n" ] || { echo "redis-server holds $(redis-cli -p "$rport" DBSIZE) keys, not $n" >&2; cat "$work/redis-pipe.log" >&2; exit 1; }
  sleep 2
  rafter=$(rss_kb "$rpid")
  kill "$rpid"; wait "$rpid" 2>/dev/null || true
  awk -v n="$n" -v a="$before" -v b="$after" -v c="$rbefore" -v d="$rafter" -v rate="$copy_rate" \
      -v first="$first_rate" -v used="$used" 'BEGIN {
    p = (b - a) * 1024 / n; r = (d - c) * 1024 / n
    printf "%9d rows  pgflow %7.1f MB (%5.0f B/row; loaded at %s rows/s, again after a restart at %s; used_memory %.1f MB, %.2f of the growth)   redis-server %7.1f MB (%4.0f B/row)   ratio %.2f\n",
      n, (b - a) / 1024, p, first, rate, used / 1048576, used / ((b - a) * 1024), (d - c) / 1024, r, p / r }'
done
