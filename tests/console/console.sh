#!/usr/bin/env bash
# The web console (engine/console.h) in a real browser: Debian's chromium, headless, driven by
# playwright-core from npm (tests/console/console.js, node's test runner), against a running
# `pgflow run` (a pipeline into a PostgreSQL target whose CHECK refuses a row, set aside as a
# dead letter) and a running `pgflow pooler`. Screenshots go to $SHOTS (BUILD_DIR/console-shots;
# docs/guides/console.md shows them).
#
# Usage: tests/console/console.sh BUILD_DIR   (KEEP=1 keeps the work directory)
set -euo pipefail
source "$(dirname "$0")/../drivers/script_env.sh" console "$@"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  "$ROOT/scripts/pgtmp.sh" stop "$WORK/pg" >/dev/null 2>&1 || true
  remove_work
}
trap cleanup EXIT
wait_http() {
  for _ in $(seq 1 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done
  echo "nothing answers on $1" >&2; return 1
}

command -v chromium >/dev/null || { echo "chromium is missing: run scripts/setup.sh" >&2; exit 1; }
source "$HERE/install.sh"
install_drivers node

PORT=$("$ROOT/scripts/pgtmp.sh" start "$WORK/pg")
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE shop" -c "CREATE DATABASE replica" \
  -c "CREATE ROLE app LOGIN PASSWORD 'app-secret'"
psql -X -q -v ON_ERROR_STOP=1 -d shop \
  -c "CREATE TABLE people (id int PRIMARY KEY, email text, age int)" \
  -c "INSERT INTO people SELECT g, 'p' || g || '@example.com', 20 + g % 50 FROM generate_series(1, 5000) g" \
  -c "GRANT SELECT ON people TO app"
# The target refuses a negative age: such a row is set aside as a dead letter.
psql -X -q -v ON_ERROR_STOP=1 -d replica \
  -c "CREATE TABLE people (id int PRIMARY KEY, email text, age int CONSTRAINT adult CHECK (age >= 0))"

# The pipeline, its console users (a SCRAM secret and a plain password: both log in).
ADMIN_PORT=$(free_port)
printf '"ops" "ops-secret"\n' >"$WORK/console-users.txt"
cat >"$WORK/pipeline.yaml" <<YAML
pipeline: console_test
source:
  postgres:
    url: postgres://postgres@127.0.0.1:$PORT/shop
    tables: [public.people]
    snapshot: {mode: initial, workers: 2}
sinks:
  replica:
    postgres: {url: "postgres://postgres@127.0.0.1:$PORT/replica"}
    dead_letter: {path: $WORK/replica.rejected.jsonl}
  changes: {jsonl: {path: $WORK/changes.jsonl}}
admin: {listen: 127.0.0.1:$ADMIN_PORT, users: console-users.txt}
YAML
"$PGFLOW" run "$WORK/pipeline.yaml" >"$WORK/run.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$ADMIN_PORT/healthz"

# The pooler, whose console users are admin.users with their users-file password.
POOLER_PORT=$(free_port)
POOLER_ADMIN=$(free_port)
printf '"admin" "admin-secret"\n"app" "app-secret"\n' >"$WORK/users.txt"
cat >"$WORK/pooler.yaml" <<YAML
listen: 127.0.0.1:$POOLER_PORT
admin: {listen: 127.0.0.1:$POOLER_ADMIN, users: [admin]}
auth: {method: scram-sha-256, users: $WORK/users.txt}
# the tenants' databases (the console adds and removes entries here)
databases:
  shop: {url: postgres://127.0.0.1:$PORT/shop, pool_mode: transaction, pool_size: 2}
  replica: {url: postgres://127.0.0.1:$PORT/replica, pool_mode: transaction, pool_size: 2}
YAML
"$PGFLOW" pooler --config "$WORK/pooler.yaml" >"$WORK/pooler.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$POOLER_ADMIN/healthz"

SHOTS=${SHOTS:-$BUILD/console-shots}
mkdir -p "$SHOTS"
say "chromium $(chromium --version 2>/dev/null | awk '{print $2}'), pipeline admin :$ADMIN_PORT, pooler admin :$POOLER_ADMIN"
status=0
(cd "$CACHE/node" && PIPELINE_ADMIN=127.0.0.1:$ADMIN_PORT POOLER_ADMIN=127.0.0.1:$POOLER_ADMIN \
  POOLER_PORT=$POOLER_PORT POOLER_FILE=$WORK/pooler.yaml PGPORT=$PORT SHOTS=$SHOTS PGFLOW_LOGS="$WORK/run.log $WORK/pooler.log" \
  NODE_PATH="$CACHE/node/node_modules" node --test --test-concurrency=1 "$ROOT/tests/console/console.js") || status=$?
if [ $status != 0 ]; then
  say "pgflow run's log:"; tail -30 "$WORK/run.log"
  say "pgflow pooler's log:"; tail -30 "$WORK/pooler.log"
fi
exit $status
