#!/usr/bin/env bash
# Real drivers through `pgflow pooler` in transaction mode, as their users run them:
# node-postgres and postgres.js (npm), psycopg 3 and asyncpg (PyPI), the PostgreSQL JDBC driver
# (Maven Central), each with several clients sharing a pool of 3 server connections, logging in
# by SCRAM-SHA-256: named and automatic server-side prepared statements, pipelining (postgres.js,
# psycopg's pipeline mode), transactions, batches, and errors that roll a transaction back.
# Then the rows each committed are counted directly: all of them, none of the rolled back.
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
# KEEP=1 keeps the work directory (and the server's data and log), ONLY=node|python|java runs
# one language's clients, PG_DEBUG=1 has the server log every statement.
set -euo pipefail
source "$(dirname "$0")/script_env.sh" pooler-drivers "$@"
POOLER_PID=
cleanup() {
  if [ -n "$POOLER_PID" ]; then kill "$POOLER_PID" 2>/dev/null || true; wait "$POOLER_PID" 2>/dev/null || true; fi
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
install_drivers node python java

# --- A server and the pooler -----------------------------------------------------------------
PORT=$("$ROOT/scripts/pgtmp.sh" start "$WORK/pg")
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
psql -X -q -v ON_ERROR_STOP=1 -d postgres \
  -c "CREATE ROLE app LOGIN PASSWORD 'app-secret'" -c "CREATE DATABASE app OWNER app"
psql -X -q -v ON_ERROR_STOP=1 -d app -c "CREATE TABLE hits (client text, n int); ALTER TABLE hits OWNER TO app" \
  -c "CREATE TABLE seen (client text, n int); ALTER TABLE seen OWNER TO app"
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
"$PGFLOW" pooler --config "$WORK/pooler.yaml" >"$WORK/pooler.log" 2>&1 &
POOLER_PID=$!
for _ in $(seq 300); do
  grep -q "pooler: listening" "$WORK/pooler.log" && break
  kill -0 "$POOLER_PID" 2>/dev/null || { cat "$WORK/pooler.log"; exit 1; }
  sleep 0.1
done
URL="postgres://app:app-secret@127.0.0.1:$POOLER_PORT/app"
say "pooler on 127.0.0.1:$POOLER_PORT (transaction mode, 3 server connections)"

# --- The clients -----------------------------------------------------------------------------
status=0
[ -n "${ONLY:-}" ] && [ "$ONLY" != node ] || NODE_PATH="$CACHE/node/node_modules" node "$HERE/clients.js" "$URL" || status=1
[ -n "${ONLY:-}" ] && [ "$ONLY" != python ] || "$CACHE/venv/bin/python" "$HERE/clients.py" "$URL" || status=1
[ -n "${ONLY:-}" ] && [ "$ONLY" != java ] || java -cp "$JAR" "$HERE/Clients.java" \
  "jdbc:postgresql://127.0.0.1:$POOLER_PORT/app?user=app&password=app-secret" || status=1

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
counts=$(psql -X -At -d app -c "SELECT string_agg(kind || '=' || n, ' ' ORDER BY kind) FROM (
  SELECT regexp_replace(client, '[0-9]+$', '') AS kind, count(*) AS n FROM hits GROUP BY 1) c")
want="java=300 js=50 pg=600 py=300"
if [ "$counts" != "$want" ]; then
  echo "rows committed: $counts; expected $want (no rolled back rows: *rb)" >&2
  status=1
else
  say "rows committed, counted directly: $counts"
fi
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

if ! kill -0 "$POOLER_PID" 2>/dev/null; then
  echo "the pooler exited:" >&2; cat "$WORK/pooler.log" >&2; status=1
fi
if grep -q "ERROR\|FATAL" "$WORK/pooler.log"; then
  echo "the pooler logged errors:" >&2; grep "ERROR\|FATAL" "$WORK/pooler.log" >&2; status=1
fi
exit $status
