#!/usr/bin/env bash
# Benchmark: SQL over HTTP and the PostgreSQL protocol over WebSocket through `pgflow pooler`'s
# http listener (issue 47), beside the wire protocol through the same pooler, in one run.
#
# One throwaway PostgreSQL with `pgbench -i -s 10`; one pooler (transaction mode, a pool of 20,
# SCRAM-SHA-256 logins, its default threads) with http.listen. CLIENTS (default 40) clients run
# pgbench -S's statement (one row by a random aid) for BENCH_SECONDS (default 10), ROUNDS times
# (default 3), each round in turn:
#   wire       pgbench -S -c CLIENTS -j 2 (the simple protocol) to the pooler's port
#   http       POST /sql over HTTP keep-alive, one connection per client, as Neon's serverless
#              driver sends it (bench/http_load, in Go, its HTTP/1.1 by hand)
#   websocket  a WebSocket session per client, its login pipelined as the driver's, then
#              simple Query messages (bench/http_load)
# It prints each round's queries/s, the means, the ratios http/wire (goal >= 0.5) and
# websocket/wire (goal >= 0.9), and the pooler's and the load generator's CPU per query: the
# two cores are shared by PostgreSQL, the pooler and the client.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${BENCH_SECONDS:-10}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-40}
source bench/common.sh

(cd bench/http_load && go build -o "$work/http_load" .)
psql -q -d postgres -c "CREATE ROLE app LOGIN PASSWORD 'app-secret'" \
  -c "ALTER DATABASE bench OWNER TO app"
PGPASSWORD=app-secret pgbench -q -i -s 10 -U app bench >/dev/null 2>&1
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
POOLER_PORT=$(free_port)
HTTP_PORT=$(free_port)
printf '"app" "app-secret"\n' >"$work/users.txt"
cat >"$work/pooler.yaml" <<YAML
listen: 127.0.0.1:$POOLER_PORT
auth: {method: scram-sha-256, users: $work/users.txt}
max_client_conn: 1000
http: {listen: 127.0.0.1:$HTTP_PORT}
databases:
  bench: {url: postgres://127.0.0.1:$PGPORT/bench, pool_mode: transaction, pool_size: 20}
YAML
"$PGFLOW_BINARY" pooler --config "$work/pooler.yaml" >"$work/pooler.log" 2>&1 &
POOLER_PID=$!
trap 'kill $POOLER_PID 2>/dev/null; wait $POOLER_PID 2>/dev/null; scripts/pgtmp.sh stop "$work/pg"; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q "pooler: listening" "$work/pooler.log" && break; sleep 0.1; done
URL="postgres://app:app-secret@127.0.0.1:$POOLER_PORT/bench"

cpu() { python3 bench/process_cpu.py "$1"; }
# run NAME: one round of NAME's load; prints "qps pooler_cpu_s client_cpu_s queries".
run() {
  local before after out client_cpu
  before=$(cpu "$POOLER_PID")
  case "$1" in
    wire)
      out=$( { /usr/bin/time -f '%U %S' pgbench -n -S -c "$CLIENTS" -j 2 -T "$SECONDS_EACH" "$URL" ; } 2>&1)
      qps=$(awk '/^tps = / { printf "%.0f", $3 }' <<<"$out")
      client_cpu=$(tail -n 1 <<<"$out" | awk '{ print $1 + $2 }')
      ;;
    http|websocket)
      out=$( { /usr/bin/time -f '%U %S' "$work/http_load" -mode "$( [ "$1" = http ] && echo http || echo ws )" \
        -addr "127.0.0.1:$HTTP_PORT" -url "postgres://app:app-secret@127.0.0.1/bench" \
        -clients "$CLIENTS" -seconds "$SECONDS_EACH" -scale 10 ; } 2>&1)
      qps=$(head -n 1 <<<"$out")
      client_cpu=$(tail -n 1 <<<"$out" | awk '{ print $1 + $2 }')
      ;;
  esac
  after=$(cpu "$POOLER_PID")
  echo "$qps $(awk -v a="$before" -v b="$after" 'BEGIN { print b - a }') $client_cpu"
}

declare -A sum pooler_cpu client_cpu queries
for mode in wire http websocket; do sum[$mode]=0; pooler_cpu[$mode]=0; client_cpu[$mode]=0; queries[$mode]=0; done
echo "clients $CLIENTS, $ROUNDS rounds of ${SECONDS_EACH}s each (queries/s)"
for round in $(seq "$ROUNDS"); do
  line="round $round:"
  for mode in wire http websocket; do
    read -r qps p c < <(run "$mode")
    sum[$mode]=$((sum[$mode] + qps))
    pooler_cpu[$mode]=$(awk -v a="${pooler_cpu[$mode]}" -v b="$p" 'BEGIN { print a + b }')
    client_cpu[$mode]=$(awk -v a="${client_cpu[$mode]}" -v b="$c" 'BEGIN { print a + b }')
    queries[$mode]=$(awk -v a="${queries[$mode]}" -v q="$qps" -v s="$SECONDS_EACH" 'BEGIN { print a + q * s }')
    line+=" $mode $qps"
  done
  echo "$line"
done
echo
printf '%-10s %10s %18s %18s\n' mode 'queries/s' 'pooler µs/query' 'client µs/query'
for mode in wire http websocket; do
  printf '%-10s %10d %18.1f %18.1f\n' "$mode" $((sum[$mode] / ROUNDS)) \
    "$(awk -v c="${pooler_cpu[$mode]}" -v q="${queries[$mode]}" 'BEGIN { print c * 1e6 / q }')" \
    "$(awk -v c="${client_cpu[$mode]}" -v q="${queries[$mode]}" 'BEGIN { print c * 1e6 / q }')"
done
awk -v w="${sum[wire]}" -v h="${sum[http]}" -v s="${sum[websocket]}" 'BEGIN {
  printf "http/wire %.2f (goal >= 0.5), websocket/wire %.2f (goal >= 0.9)\n", h / w, s / w }'
