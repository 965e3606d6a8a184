#!/usr/bin/env bash
# Real drivers through `pgflow pooler` in transaction mode, as their users run them:
# node-postgres and postgres.js (npm), psycopg 3 and asyncpg (PyPI), the PostgreSQL JDBC driver
# (Maven Central) and pgx (the Go module proxy), each with several clients sharing a pool of 3
# server connections, logging in by SCRAM-SHA-256: named and automatic server-side prepared
# statements, pipelining (postgres.js, psycopg's pipeline mode, pgx's batches), transactions,
# batches, COPY FROM, and errors that roll a transaction back. Then the rows each committed are
# counted directly: all of them, none of the rolled back.
#
# Then the same clients again over TLS (sslmode=require, a pooler that refuses clients in the
# clear), each through its own TLS stack: OpenSSL under Node.js and libpq, Java's JSSE, Go's
# crypto/tls; all of them agree TLS 1.3, so the pooler's own record layer carries them once
# they are logged in. pgbench writes through the same pooler over TLS meanwhile, and every
# transaction it reports committed is counted too.
#
# Then a cutover (cutover.js): node-postgres clients run named prepared statements in
# transactions through a pooler while `pgflow cutover` moves their database to another one a
# pipeline copied it into; none may fail, and the new database holds every one.
#
# Then the routing proxy (routed.js, routed.py, Routed.java): the same drivers against a database
# with a streaming replica (pg_basebackup -R), prepared statements placed by their Parse, each
# read after a client's own write seeing it, and reads of clients that only read served by the
# replica (SHOW REPLICAS counts them).
#
# Then cancels and schema changes (cancels.py, Cancels.java, cancels.js), each driver's workload
# run directly and through the pooler: a cancel (psycopg's cancel(), asyncpg's and JDBC's
# timeouts, postgres.js's cancel()) never cancels another client's query, a query waiting for a
# server connection is cancelled at once, and no statement prepared after a schema change fails
# 0A000 "cached plan must not change result type".
#
# The drivers are installed once into the build tree (BUILD_DIR/drivers). Usage:
#   tests/drivers/pooler_drivers.sh BUILD_DIR
# KEEP=1 keeps the work directory (and the server's data and log), ONLY=node|python|java|go runs
# one language's clients, PG_DEBUG=1 has the server log every statement.
set -euo pipefail
source "$(dirname "$0")/script_env.sh" pooler-drivers "$@"
POOLER_PID=
TLS_POOLER_PID=
PGBENCH_PID=
cleanup() {
  local pid
  for pid in $PGBENCH_PID $POOLER_PID $TLS_POOLER_PID; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 1 ]; then
    "$ROOT/scripts/pgtmp.sh" pause "$WORK/replica" >/dev/null 2>&1 || true
    "$ROOT/scripts/pgtmp.sh" pause "$WORK/pg" >/dev/null 2>&1 || true
    echo "kept $WORK"
  else
    "$ROOT/scripts/pgtmp.sh" stop "$WORK/replica" >/dev/null 2>&1 || true
    "$ROOT/scripts/pgtmp.sh" stop "$WORK/pg" >/dev/null 2>&1 || true
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

# --- The drivers -----------------------------------------------------------------------------
source "$HERE/install.sh"
install_drivers node python java go

# --- A server and the pooler -----------------------------------------------------------------
PORT=$("$ROOT/scripts/pgtmp.sh" start "$WORK/pg")
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
psql -X -q -v ON_ERROR_STOP=1 -d postgres \
  -c "CREATE ROLE app LOGIN PASSWORD 'app-secret'" -c "CREATE DATABASE app OWNER app"
psql -X -q -v ON_ERROR_STOP=1 -d app -c "CREATE TABLE hits (client text, n int); ALTER TABLE hits OWNER TO app" \
  -c "CREATE TABLE seen (client text, n int); ALTER TABLE seen OWNER TO app" \
  -c "CREATE TABLE copied (client text, n int); ALTER TABLE copied OWNER TO app"
REPLICA_PORT=$("$ROOT/scripts/pgtmp.sh" standby "$WORK/replica" "$PORT" | tail -n 1)
[ -n "${PG_DEBUG:-}" ] && psql -X -q -d postgres -c "ALTER SYSTEM SET log_statement = 'all'" -c "SELECT pg_reload_conf()" >/dev/null
POOLER_PORT=$(free_port)
printf '"app" "app-secret"\n' >"$WORK/users.txt"
cat >"$WORK/pooler.yaml" <<YAML
listen: 127.0.0.1:$POOLER_PORT
threads: 2
admin: {users: [app]}
auth: {method: scram-sha-256, users: $WORK/users.txt}
databases:
  app: {url: postgres://127.0.0.1:$PORT/app, pool_mode: transaction, pool_size: 3}
  routed: {url: 'postgres://app:app-secret@127.0.0.1:$PORT/app', pool_mode: transaction, pool_size: 3,
           replicas: ['postgres://app:app-secret@127.0.0.1:$REPLICA_PORT/app']}
  small: {url: postgres://127.0.0.1:$PORT/app, pool_mode: transaction, pool_size: 2}
  one: {url: postgres://127.0.0.1:$PORT/app, pool_mode: transaction, pool_size: 1}
YAML
# start_pooler NAME: `pgflow pooler` on WORK/NAME.yaml, logging to WORK/NAME.log, until it
# listens; its pid in STARTED.
start_pooler() {
  "$PGFLOW" pooler --config "$WORK/$1.yaml" >"$WORK/$1.log" 2>&1 &
  STARTED=$!
  for _ in $(seq 300); do
    grep -q "pooler: listening" "$WORK/$1.log" && return 0
    kill -0 "$STARTED" 2>/dev/null || break
    sleep 0.1
  done
  kill "$STARTED" 2>/dev/null || true
  cat "$WORK/$1.log" >&2
  exit 1
}
start_pooler pooler
POOLER_PID=$STARTED
URL="postgres://app:app-secret@127.0.0.1:$POOLER_PORT/app"
say "pooler on 127.0.0.1:$POOLER_PORT (transaction mode, 3 server connections)"

# --- The clients -----------------------------------------------------------------------------
# run_clients URL JDBC_URL: each language's clients, one after the other; status=1 if one fails.
status=0
run_clients() {
  [ -n "${ONLY:-}" ] && [ "$ONLY" != node ] ||
    NODE_PATH="$CACHE/node/node_modules" node "$HERE/clients.js" "$1" || status=1
  [ -n "${ONLY:-}" ] && [ "$ONLY" != python ] ||
    "$CACHE/venv/bin/python" "$HERE/clients.py" "$1" || status=1
  [ -n "${ONLY:-}" ] && [ "$ONLY" != java ] || java -cp "$JAR" "$HERE/Clients.java" "$2" || status=1
  [ -n "${ONLY:-}" ] && [ "$ONLY" != go ] || "$PGX_CLIENTS" "$1" || status=1
}
run_clients "$URL" "jdbc:postgresql://127.0.0.1:$POOLER_PORT/app?user=app&password=app-secret"

# --- Through the routing proxy ---------------------------------------------------------------
ROUTED="postgres://app:app-secret@127.0.0.1:$POOLER_PORT/routed"
replica_reads() {
  psql -X -At "postgres://app:app-secret@127.0.0.1:$POOLER_PORT/pgflow" -c "SHOW REPLICAS" |
    awk -F'|' '$1 == "routed" && $2 == "1" { print $9 }'
}
for _ in $(seq 100); do
  psql -X -At "postgres://app:app-secret@127.0.0.1:$POOLER_PORT/pgflow" -c "SHOW REPLICAS" |
    grep -q '^routed|1|replica|[^|]*|healthy|' && break
  sleep 0.1
done
reads_before=$(replica_reads)
[ -n "${ONLY:-}" ] && [ "$ONLY" != node ] || NODE_PATH="$CACHE/node/node_modules" node "$HERE/routed.js" "$ROUTED" || status=1
[ -n "${ONLY:-}" ] && [ "$ONLY" != python ] || "$CACHE/venv/bin/python" "$HERE/routed.py" "$ROUTED" || status=1
[ -n "${ONLY:-}" ] && [ "$ONLY" != java ] || java -cp "$JAR" "$HERE/Routed.java" \
  "jdbc:postgresql://127.0.0.1:$POOLER_PORT/routed?user=app&password=app-secret" || status=1
reads_after=$(replica_reads)
if [ -z "$reads_after" ] || [ $((reads_after - reads_before)) -lt 100 ]; then
  echo "the replica served $((${reads_after:-0} - ${reads_before:-0})) reads through the proxy; expected at least 100" >&2
  psql -X -At "postgres://app:app-secret@127.0.0.1:$POOLER_PORT/pgflow" -c "SHOW REPLICAS" >&2
  status=1
else
  say "routing proxy: the replica served $((reads_after - reads_before)) reads; every read after a write saw it"
fi

# --- Cancels and schema changes, directly and through the pooler --------------------------------
DIRECT="postgres://app:app-secret@127.0.0.1:$PORT/app"
POOLER="postgres://app:app-secret@127.0.0.1:$POOLER_PORT"
JDBC_AUTH="user=app&password=app-secret"
[ -n "${ONLY:-}" ] && [ "$ONLY" != python ] ||
  "$CACHE/venv/bin/python" "$HERE/cancels.py" "$DIRECT" "$POOLER/small" "$POOLER/one" "$POOLER/app" ||
  status=1
[ -n "${ONLY:-}" ] && [ "$ONLY" != java ] || java -cp "$JAR" "$HERE/Cancels.java" \
  "jdbc:postgresql://127.0.0.1:$PORT/app?$JDBC_AUTH" \
  "jdbc:postgresql://127.0.0.1:$POOLER_PORT/small?$JDBC_AUTH" \
  "jdbc:postgresql://127.0.0.1:$POOLER_PORT/app?$JDBC_AUTH" || status=1
[ -n "${ONLY:-}" ] && [ "$ONLY" != node ] || NODE_PATH="$CACHE/node/node_modules" \
  node "$HERE/cancels.js" "$DIRECT" "$POOLER/small" "$POOLER/app" || status=1

# --- What they committed, counted directly ---------------------------------------------------
# check_committed DATABASE: the rows each language's clients committed in DATABASE's hits.
check_committed() {
  local counts want="go=600 java=300 js=50 pg=600 py=300"
  counts=$(psql -X -At -d "$1" -c "SELECT string_agg(kind || '=' || n, ' ' ORDER BY kind) FROM (
    SELECT regexp_replace(client, '[0-9]+$', '') AS kind, count(*) AS n FROM hits GROUP BY 1) c")
  copies=$(psql -X -At -d "$1" -c "SELECT count(*) FROM copied")
  if [ "$counts" != "$want" ] || [ "$copies" != 30000 ]; then
    echo "rows committed in $1: $counts and $copies copied; expected $want" \
      "(no rolled back rows: *rb) and 30000" >&2
    status=1
  else
    say "rows committed in $1, counted directly: $counts, and $copies copied"
  fi
}
check_committed app

# --- The same clients over TLS, with pgbench writing over TLS meanwhile -----------------------
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
  -keyout "$WORK/server.key" -out "$WORK/server.crt" 2>/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE app_tls OWNER app"
psql -X -q -v ON_ERROR_STOP=1 "postgres://app:app-secret@127.0.0.1:$PORT/app_tls" \
  -c "CREATE TABLE hits (client text, n int)" -c "CREATE TABLE copied (client text, n int)" \
  -c "CREATE TABLE writes (id bigserial PRIMARY KEY, n int)"
TLS_PORT=$(free_port)
cat >"$WORK/tls-pooler.yaml" <<YAML
listen: 127.0.0.1:$TLS_PORT
threads: 2
auth: {method: scram-sha-256, users: $WORK/users.txt}
tls: {mode: require, cert: $WORK/server.crt, key: $WORK/server.key}
databases:
  app: {url: postgres://127.0.0.1:$PORT/app_tls, pool_mode: transaction, pool_size: 4}
YAML
start_pooler tls-pooler
TLS_POOLER_PID=$STARTED
TLS_URL="postgres://app:app-secret@127.0.0.1:$TLS_PORT/app?sslmode=require"
if PGSSLMODE=disable psql -X -At "postgres://app:app-secret@127.0.0.1:$TLS_PORT/app" -c "SELECT 1" \
    >"$WORK/clear.out" 2>&1 || ! grep -q "accepts TLS connections only" "$WORK/clear.out"; then
  echo "the TLS pooler did not refuse a client in the clear as it should:" >&2
  cat "$WORK/clear.out" >&2; status=1
fi
# pgbench: 4 clients, named prepared statements, 200 transactions a second, for 30 s (the
# drivers take about as long); then what it reports committed is what the table holds.
printf '\\set n random(1, 1000000)\nINSERT INTO writes (n) VALUES (:n);\n' >"$WORK/writes.sql"
pgbench -n -M prepared -c 4 -j 1 -R 200 -T "${TLS_WRITE_SECONDS:-30}" -f "$WORK/writes.sql" \
  "$TLS_URL" >"$WORK/pgbench-tls.out" 2>&1 &
PGBENCH_PID=$!
run_clients "$TLS_URL" \
  "jdbc:postgresql://127.0.0.1:$TLS_PORT/app?user=app&password=app-secret&sslmode=require" \
  >"$WORK/tls-clients.out"
cat "$WORK/tls-clients.out"
# (TLS 1.3, so the pooler's record layer carried them: TLS 1.2 would have stayed with OpenSSL.)
[ -n "${ONLY:-}" ] || for driver in node-postgres pgx; do
  if ! grep "^ok $driver:" "$WORK/tls-clients.out" | grep -q 'TLSv1.3\|TLS 1.3'; then
    echo "$driver did not report TLS 1.3" >&2; status=1
  fi
done
if ! wait "$PGBENCH_PID"; then
  echo "pgbench over TLS failed:" >&2; cat "$WORK/pgbench-tls.out" >&2; status=1
fi
processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' \
  "$WORK/pgbench-tls.out")
written=$(psql -X -At -d app_tls -c "SELECT count(*) FROM writes")
if [ -z "$processed" ] || [ "$processed" != "$written" ] || [ "$processed" -lt 1000 ] ||
    grep -q '^number of failed transactions: [1-9]' "$WORK/pgbench-tls.out"; then
  echo "pgbench over TLS: ${processed:-?} transactions reported, $written rows written:" >&2
  cat "$WORK/pgbench-tls.out" >&2; status=1
else
  say "pgbench over TLS meanwhile: $processed transactions, every one of them written"
fi
check_committed app_tls
# --- A cutover under node-postgres ------------------------------------------------------------
if [ -z "${ONLY:-}" ] || [ "$ONLY" = node ]; then
  # (Databases of their own: the clients above left the first pooler's connections to app.)
  psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE cut_a OWNER app" \
    -c "CREATE DATABASE cut_b OWNER app"
  psql -X -q -v ON_ERROR_STOP=1 -d cut_a \
    -c "CREATE TABLE cut_orders (id bigserial PRIMARY KEY, client text, n int)" \
    -c "ALTER TABLE cut_orders OWNER TO app"
  read -r CUT_POOLER_PORT CUT_ADMIN_PORT < <("$ROOT/scripts/free_ports" 2)
  cat >"$WORK/cutover-pooler.yaml" <<YAML
listen: 127.0.0.1:$CUT_POOLER_PORT
admin: {users: [app]}
auth: {method: scram-sha-256, users: $WORK/users.txt}
databases:
  app: {url: postgres://127.0.0.1:$PORT/cut_a, pool_mode: transaction, pool_size: 3}
YAML
  cat >"$WORK/cutover.yaml" <<YAML
pipeline: drivers_cutover
source:
  postgres: {url: 'postgres://postgres@127.0.0.1:$PORT/cut_a', tables: [public.cut_orders], status_interval: 200ms}
sinks:
  b: {postgres: {url: 'postgres://postgres@127.0.0.1:$PORT/cut_b'}, flush_interval: 20ms}
admin: {listen: 127.0.0.1:$CUT_ADMIN_PORT}
YAML
  "$PGFLOW" pooler --config "$WORK/cutover-pooler.yaml" >"$WORK/cutover-pooler.log" 2>&1 &
  CUT_POOLER_PID=$!
  "$PGFLOW" run "$WORK/cutover.yaml" >"$WORK/cutover-run.log" 2>&1 &
  CUT_RUN_PID=$!
  for _ in $(seq 300); do grep -q "streaming from" "$WORK/cutover-run.log" && break; sleep 0.1; done
  NODE_PATH="$CACHE/node/node_modules" node "$HERE/cutover.js" \
    "postgres://app:app-secret@127.0.0.1:$CUT_POOLER_PORT/app" 6 >"$WORK/cutover-node.out" &
  NODE_PID=$!
  sleep 2
  # (No stream back, so that the old database shows what was written before the switch only:
  # the stream back has its own tests, tests/integration/cutover_test.cc.)
  if ! "$PGFLOW" cutover "$WORK/cutover.yaml" --pooler "postgres://app:app-secret@127.0.0.1:$CUT_POOLER_PORT/pgflow" \
      --database app --no-reverse >"$WORK/cutover.out" 2>&1 || ! grep -q '^cutover: done' "$WORK/cutover.out"; then
    echo "the cutover under node-postgres failed:" >&2
    cat "$WORK/cutover.out" "$WORK/cutover-run.log" >&2; status=1
  fi
  if ! wait "$NODE_PID"; then
    echo "node-postgres failed during the cutover" >&2; status=1
  else
    committed=$(cat "$WORK/cutover-node.out")
    on_b=$(psql -X -At -d cut_b -c "SELECT count(*) FROM cut_orders")
    on_a=$(psql -X -At -d cut_a -c "SELECT count(*) FROM cut_orders")
    if [ "$on_b" != "$committed" ] || [ "$on_a" -ge "$on_b" ]; then
      echo "after the cutover: $on_b rows on the new database ($on_a on the old), $committed committed" >&2
      status=1
    else
      say "cutover under node-postgres: $committed transactions, none failed, all on the new database ($on_a of them written on the old); $(grep '^cutover: done' "$WORK/cutover.out" | sed 's/^cutover: done; //; s/\. .*//')"
    fi
  fi
  kill "$CUT_RUN_PID" "$CUT_POOLER_PID" 2>/dev/null || true
  wait "$CUT_RUN_PID" "$CUT_POOLER_PID" 2>/dev/null || true
fi

for pid in "$POOLER_PID" "$TLS_POOLER_PID"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "a pooler exited:" >&2; cat "$WORK/pooler.log" "$WORK/tls-pooler.log" >&2; status=1
  fi
done
for log in pooler tls-pooler; do
  if grep -q "ERROR\|FATAL\|refused .*TLS .*record" "$WORK/$log.log"; then
    echo "the $log logged errors:" >&2
    grep "ERROR\|FATAL\|refused .*TLS .*record" "$WORK/$log.log" >&2; status=1
  fi
done
exit $status
