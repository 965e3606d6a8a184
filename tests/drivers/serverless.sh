#!/usr/bin/env bash
# Neon's serverless driver (@neondatabase/serverless 1.x and ws, from npm) against
# `pgflow pooler`'s http listener: SQL over HTTP and the PostgreSQL protocol over WebSocket,
# through the pooler's pools and SCRAM logins (tests/drivers/serverless.js, node's test runner).
#
# Usage: tests/drivers/serverless.sh BUILD_DIR   (KEEP=1 keeps the work directory)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
PGFLOW=$BUILD/pgflow
HERE=$ROOT/tests/drivers
CACHE=$BUILD/drivers
WORK=$(mktemp -d /tmp/pgflow-serverless.XXXXXX)
chmod 755 "$WORK"
POOLER_PID=
cleanup() {
  if [ -n "$POOLER_PID" ]; then kill "$POOLER_PID" 2>/dev/null || true; wait "$POOLER_PID" 2>/dev/null || true; fi
  "$ROOT/scripts/pgtmp.sh" stop "$WORK/pg" >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
say() { echo "[serverless] $*"; }
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

source "$HERE/install.sh"
install_drivers node

PORT=$("$ROOT/scripts/pgtmp.sh" start "$WORK/pg")
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
psql -X -q -v ON_ERROR_STOP=1 -d postgres \
  -c "CREATE ROLE app LOGIN PASSWORD 'app-secret'" -c "CREATE DATABASE app OWNER app"
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
YAML
"$PGFLOW" pooler --config "$WORK/pooler.yaml" >"$WORK/pooler.log" 2>&1 &
POOLER_PID=$!
for _ in $(seq 300); do
  grep -q "pooler: listening" "$WORK/pooler.log" && break
  kill -0 "$POOLER_PID" 2>/dev/null || { cat "$WORK/pooler.log"; exit 1; }
  sleep 0.1
done
say "pooler on 127.0.0.1:$POOLER_PORT, SQL over HTTP and WebSocket on 127.0.0.1:$HTTP_PORT"

status=0
HTTP_PORT=$HTTP_PORT ADMIN_PORT=$ADMIN_PORT POOLER_PID=$POOLER_PID \
  NODE_PATH="$CACHE/node/node_modules" node --test --test-reporter=spec "$HERE/serverless.js" ||
  status=1
if [ "$status" != 0 ]; then
  echo "--- pooler log" >&2
  tail -n 50 "$WORK/pooler.log" >&2
fi
exit "$status"
