#!/usr/bin/env bash
# Neon's serverless driver (@neondatabase/serverless 1.x and ws, from npm) against
# `pgflow pooler`'s http listener: SQL over HTTP and the PostgreSQL protocol over WebSocket,
# through the pooler's pools and SCRAM logins (tests/drivers/serverless.js, node's test runner).
#
# Usage: tests/drivers/serverless.sh BUILD_DIR   (KEEP=1 keeps the work directory)
set -euo pipefail
source "$(dirname "$0")/script_env.sh" serverless "$@"
POOLER_PID=
cleanup() {
  if [ -n "$POOLER_PID" ]; then kill "$POOLER_PID" 2>/dev/null || true; wait "$POOLER_PID" 2>/dev/null || true; fi
  "$ROOT/scripts/pgtmp.sh" stop "$WORK/pg" >/dev/null 2>&1 || true
  remove_work
}
trap cleanup EXIT

source "$HERE/install.sh"
install_drivers node

PORT=$("$ROOT/scripts/pgtmp.sh" start "$WORK/pg")
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
psql -X -q -v ON_ERROR_STOP=1 -d postgres \
  -c "CREATE ROLE app LOGIN PASSWORD 'app-secret'" -c "CREATE DATABASE app OWNER app" \
  -c "CREATE DATABASE other OWNER app"
psql -X -q -v ON_ERROR_STOP=1 -d app \
  -c "CREATE TABLE items (id int PRIMARY KEY, name text); ALTER TABLE items OWNER TO app"

POOLER_PORT=$(free_port)
HTTP_PORT=$(free_port)
ADMIN_PORT=$(free_port)
printf '"app" "app-secret"\n' >"$WORK/users.txt"
cat >"$WORK/pooler.yaml" <<YAML
listen: 127.0.0.1:$POOLER_PORT
threads: 2
admin: {listen: 127.0.0.1:$ADMIN_PORT}
auth: {method: scram-sha-256, users: $WORK/users.txt}
http: {listen: 127.0.0.1:$HTTP_PORT, max_request_size: 1MiB, statement_timeout: 1s}
databases:
  app: {url: postgres://127.0.0.1:$PORT/app, pool_mode: transaction, pool_size: 3}
  other: {url: postgres://127.0.0.1:$PORT/other, pool_mode: transaction, pool_size: 2}
YAML
# A second pooler whose wire takes TLS only (tls.mode require), its http listener HTTPS and
# wss:// with a certificate of its own: the driver's TLS counts as the client's TLS.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$WORK/http.key" -out "$WORK/http.crt" \
  >/dev/null 2>&1
TLS_POOLER_PORT=$(free_port)
TLS_HTTP_PORT=$(free_port)
cat >"$WORK/tls-pooler.yaml" <<YAML
listen: 127.0.0.1:$TLS_POOLER_PORT
threads: 1
auth: {method: scram-sha-256, users: $WORK/users.txt}
tls: {mode: require, cert: $WORK/http.crt, key: $WORK/http.key}
http: {listen: 127.0.0.1:$TLS_HTTP_PORT, tls: {cert: $WORK/http.crt, key: $WORK/http.key}}
databases:
  app: {url: postgres://127.0.0.1:$PORT/app, pool_mode: transaction, pool_size: 2}
YAML
start_pooler() {  # config, log: the pid in STARTED
  "$PGFLOW" pooler --config "$1" >"$2" 2>&1 &
  STARTED=$!
  for _ in $(seq 300); do
    grep -q "pooler: listening" "$2" && return
    kill -0 "$STARTED" 2>/dev/null || { cat "$2"; exit 1; }
    sleep 0.1
  done
}
start_pooler "$WORK/pooler.yaml" "$WORK/pooler.log"
POOLER_PID=$STARTED
start_pooler "$WORK/tls-pooler.yaml" "$WORK/tls-pooler.log"
TLS_POOLER_PID=$STARTED
say "pooler on 127.0.0.1:$POOLER_PORT, SQL over HTTP and WebSocket on 127.0.0.1:$HTTP_PORT;" \
  "over HTTPS and wss:// on 127.0.0.1:$TLS_HTTP_PORT"

status=0
HTTP_PORT=$HTTP_PORT ADMIN_PORT=$ADMIN_PORT POOLER_PID=$POOLER_PID TLS_HTTP_PORT=$TLS_HTTP_PORT \
  NODE_EXTRA_CA_CERTS="$WORK/http.crt" NODE_PATH="$CACHE/node/node_modules" \
  node --test --test-reporter=spec "$HERE/serverless.js" || status=1
kill "$TLS_POOLER_PID" 2>/dev/null || true
if [ "$status" != 0 ]; then
  echo "--- pooler log" >&2
  tail -n 50 "$WORK/pooler.log" >&2
  echo "--- TLS pooler log" >&2
  tail -n 20 "$WORK/tls-pooler.log" >&2
fi
exit "$status"
