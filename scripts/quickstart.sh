#!/usr/bin/env bash
# The quickstart: installs and builds pgflow, starts a throwaway PostgreSQL with a small shop
# schema, runs examples/quickstart.yaml, makes a few writes, and shows the change events that
# arrive. Everything it starts is stopped and removed when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh pgflow  # only what the quickstart runs; scripts/test.sh builds the rest

work=$(mktemp -d /tmp/pgflow-quickstart.XXXXXX)
pgflow_pid=""
cleanup() {
  [ -n "$pgflow_pid" ] && kill "$pgflow_pid" 2>/dev/null || true
  scripts/pgtmp.sh stop "$work/pg"
  rm -rf "$work"
}
trap cleanup EXIT

echo "== starting a throwaway PostgreSQL (wal_level=logical)"
chmod 755 "$work"
PGPORT=$(scripts/pgtmp.sh start "$work/pg")
export PGPORT PGHOST=127.0.0.1 PGUSER=postgres
psql -q -d postgres -c "CREATE DATABASE shop"
psql -q -d shop -v ON_ERROR_STOP=1 -f examples/shop.sql   # the shop every example reads
echo "== PostgreSQL on 127.0.0.1:$PGPORT, database shop (examples/shop.sql); running: pgflow run examples/quickstart.yaml"

# Events go to the terminal as they arrive (and to a file, to count them).
build/pgflow run examples/quickstart.yaml 2> "$work/pgflow.log" > >(tee "$work/events.jsonl") &
pgflow_pid=$!
for _ in $(seq 100); do grep -q "snapshot: done" "$work/pgflow.log" 2>/dev/null && break; sleep 0.1; done
cat "$work/pgflow.log"

echo "== writing to the shop; the change events follow as pgflow writes them"
psql -q -d shop -e <<'SQL'
INSERT INTO products VALUES (1, 'pen', 1.50, '{office,blue}', '{"ink": "gel"}'),
                            (2, 'notebook', 4.00, '{office}', null);
BEGIN;
INSERT INTO orders (product_id, quantity) VALUES (1, 3);
UPDATE products SET price = 1.75 WHERE id = 1;
COMMIT;
DELETE FROM products WHERE id = 2;
SQL

expected=7   # 2 rows copied by the snapshot, then 5 changes
for _ in $(seq 100); do [ "$(wc -l < "$work/events.jsonl")" -ge $expected ] && break; sleep 0.1; done
echo "== stopping pgflow with SIGINT (drain, flush, acknowledge, exit 0)"
kill -INT "$pgflow_pid"
wait "$pgflow_pid"
pgflow_pid=""
tail -n 2 "$work/pgflow.log"
[ "$(wc -l < "$work/events.jsonl")" -ge $expected ] || { echo "quickstart: expected $expected events" >&2; exit 1; }
echo "== done: pgflow stopped cleanly, PostgreSQL removed"
