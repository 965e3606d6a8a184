#!/usr/bin/env bash
# Runs docs/guides/migrate.md as a user would: every ```sh block of the guide, in order, in one shell,
# against two throwaway servers (scripts/pgtmp.sh) holding a small shop database. The guide's
# first block (where things are) is replaced by this script's own settings; while the pipeline
# streams, the "application" writes, changes a table and adds one. The guide's own commands
# must succeed as written, and its `pgflow verify` must find the two databases identical.
# Usage: tests/guide/migrate_guide.sh BUILD_DIR
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
WORK=$(mktemp -d /tmp/pgflow-guide.XXXXXX)
chmod 755 "$WORK"
cleanup() {
  [ -f "$WORK/pgflow.pid" ] && kill "$(cat "$WORK/pgflow.pid")" 2>/dev/null || true
  [ -f "$WORK/pooler.pid" ] && kill "$(cat "$WORK/pooler.pid")" 2>/dev/null || true
  "$ROOT/scripts/pgtmp.sh" stop "$WORK/old" >/dev/null 2>&1 || true
  "$ROOT/scripts/pgtmp.sh" stop "$WORK/new" >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
say() { echo "[guide] $*"; }

OLD=$("$ROOT/scripts/pgtmp.sh" start "$WORK/old")
NEW=$("$ROOT/scripts/pgtmp.sh" start "$WORK/new")
for port in "$OLD" "$NEW"; do
  psql -X -q -v ON_ERROR_STOP=1 "postgres://postgres@127.0.0.1:$port/postgres" -c "CREATE DATABASE shop"
done
# The application's database: its own role with a password, which owns the database, the
# tables and a type; a group granted SELECT (by default privileges too) and a login role in it;
# settings; types, keys, a foreign key, a keyless table.
psql -X -q -v ON_ERROR_STOP=1 "postgres://postgres@127.0.0.1:$OLD/shop" <<'SQL'
CREATE ROLE app LOGIN PASSWORD 'App-Pw1' CONNECTION LIMIT 50;
ALTER ROLE app SET statement_timeout = '60s';
CREATE ROLE reader NOLOGIN;
CREATE ROLE analyst LOGIN IN ROLE reader;
ALTER DATABASE shop OWNER TO app;
ALTER DATABASE shop SET work_mem = '8MB';
GRANT CREATE ON SCHEMA public TO app;
SET ROLE app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO reader;
CREATE TYPE status AS ENUM ('new', 'paid', 'shipped');
CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL UNIQUE);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer int NOT NULL REFERENCES customers (id),
                     status status NOT NULL DEFAULT 'new', total numeric(10, 2),
                     placed timestamptz NOT NULL DEFAULT now());
CREATE TABLE audit (at timestamptz DEFAULT now(), note text);
INSERT INTO customers (email) SELECT 'c' || g || '@example.com' FROM generate_series(1, 2000) g;
INSERT INTO orders (customer, total) SELECT 1 + g % 2000, g / 10.0 FROM generate_series(1, 20000) g;
INSERT INTO audit (note) SELECT 'n' || g FROM generate_series(1, 500) g;
GRANT UPDATE ON customers TO reader;
SQL
# On the new server the application logs in with its password, nothing else.
hba="$WORK/new/data/pg_hba.conf"
{ echo "host all app 127.0.0.1/32 scram-sha-256"; cat "$hba"; } >"$WORK/hba" && cat "$WORK/hba" >"$hba"
psql -X -q -At "postgres://postgres@127.0.0.1:$NEW/postgres" -c "SELECT pg_reload_conf()" >/dev/null

# The guide's blocks, the first replaced by these settings.
read -r POOLER_PORT ADMIN_PORT < <("$ROOT/scripts/free_ports" 2)
python3 - "$ROOT/docs/guides/migrate.md" "$WORK/guide.sh" "$OLD" "$NEW" "$POOLER_PORT" "$ADMIN_PORT" <<'PY'
import re, sys
guide, out, old, new, pooler, admin = sys.argv[1:7]
blocks = re.findall(r"```sh\n(.*?)```", open(guide).read(), re.S)
assert blocks and blocks[0].startswith("# Where things are"), "the guide's first block moved"
script = ["set -euo pipefail", "set -x",
          f"export SOURCE_ADMIN=postgres://postgres@127.0.0.1:{old}/shop",
          f"export TARGET_ADMIN=postgres://postgres@127.0.0.1:{new}/shop",
          "export FLOW_PASSWORD='Gu1de-Pw'",
          f"export SOURCE_URL=\"postgres://flow:${{FLOW_PASSWORD}}@127.0.0.1:{old}/shop\"",
          f"export TARGET_URL=\"postgres://flow:${{FLOW_PASSWORD}}@127.0.0.1:{new}/shop\"",
          "export APP_PASSWORD='App-Pw1'",
          f"export OLD_SERVER=127.0.0.1:{old} NEW_SERVER=127.0.0.1:{new}",
          f"export POOLER=127.0.0.1:{pooler}",
          "export APP_URL=\"postgres://app:${APP_PASSWORD}@${POOLER}/shop\""]
for block in blocks[1:]:
    # (The guide's admin endpoint port, made one that is free here.)
    script.append(block.replace("127.0.0.1:9187", f"127.0.0.1:{admin}"))
    if "pgflow run shop-migrate.yaml > migrate.log" in block:
        script.append('echo $PGFLOW_PID > pgflow.pid')
    if "pgflow pooler --config pooler.yaml" in block:
        script.append('echo $POOLER_PID > pooler.pid; application_writes')
open(out, "w").write("\n".join(script) + "\n")
PY

# What the application does, through the pooler, while the pipeline streams: writes, a new
# column, a new table.
application_writes() {
  psql -X -q -v ON_ERROR_STOP=1 "$APP_URL" <<'SQL'
INSERT INTO customers (email) SELECT 'late' || g || '@example.com' FROM generate_series(1, 100) g;
UPDATE orders SET status = 'paid' WHERE id % 3 = 0;
DELETE FROM orders WHERE id % 97 = 0;
ALTER TABLE orders ADD COLUMN note text;
UPDATE orders SET note = 'gift' WHERE id % 11 = 0;
CREATE TABLE refunds (id serial PRIMARY KEY, order_id bigint REFERENCES orders (id), amount numeric);
INSERT INTO refunds (order_id, amount) SELECT id, total FROM orders WHERE id % 50 = 1;
UPDATE audit SET note = note || '!' WHERE note LIKE 'n1%';
SQL
}
export -f application_writes
export OLD

cd "$WORK"
start=$(date +%s)
if ! PATH="$BUILD:$PATH" bash guide.sh >guide.out 2>&1; then
  # (Most telling last: CI shows the head and the tail of a long output.)
  for log in old/server.log new/server.log; do
    say "$log, its warnings and errors:"; grep -E "WARNING|ERROR|FATAL|PANIC" "$log" | tail -n 10 || true
  done
  [ -f pooler.log ] && { say "pooler.log:"; tail -n 10 pooler.log; }
  [ -f migrate.log ] && { say "migrate.log:"; tail -n 15 migrate.log; }
  say "FAIL: the guide's commands stopped:"; tail -n 30 guide.out
  exit 1
fi
say "the guide ran as written ($(($(date +%s) - start)) s)"
grep -E "^target: " guide.out | tail -n 1 | sed 's/^/[guide] verify: /'
grep -E "^cutover: " guide.out | sed 's/^/[guide] /'
grep -q "^cutover: done" guide.out || { say "FAIL: the cutover did not switch"; tail -n 40 guide.out; exit 1; }
grep -q "^target: identical" guide.out || { say "FAIL: verify did not say identical"; cat guide.out; exit 1; }
# The migration really moved the application's data, and the slot is gone from the old server.
count() { psql -X -Atc "$2" "postgres://postgres@127.0.0.1:$1/shop"; }
[ "$(count "$NEW" "SELECT count(*) FROM refunds")" = "$(count "$OLD" "SELECT count(*) FROM refunds")" ]
# (The application's first order on the new server took the id after the old server's last.)
[ "$(count "$NEW" "SELECT last_value FROM orders_id_seq")" = "$(($(count "$OLD" "SELECT last_value FROM orders_id_seq") + 1))" ]
[ "$(count "$OLD" "SELECT count(*) FROM pg_replication_slots")" = 0 ]
# (The shell's own trace, lines starting with '+', shows what the guide typed.)
secret=$(count "$OLD" "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
for password in "Gu1de-Pw" "App-Pw1" "$secret"; do
  if grep -v '^+' guide.out | cat - migrate.log | grep -qF -- "$password"; then
    say "FAIL: a password or its secret appears in pgflow's output"; exit 1
  fi
done
check() {  # what it shows, the server, a query, the answer expected
  local got; got=$(count "$2" "$3")
  [ "$got" = "$4" ] || { say "FAIL: $1: got '$got', expected '$4'"; tail -n 60 guide.out; exit 1; }
}
# The application logged in to the new server as itself (the guide's INSERT), and only with its
# password; the roles came with their attributes, memberships and settings.
if psql -X -q "postgres://app:wrong@127.0.0.1:$NEW/shop" -c "SELECT 1" >/dev/null 2>&1; then
  say "FAIL: the new server let app in with a wrong password"; exit 1
fi
check "app's attributes" "$NEW" "SELECT rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname = 'app'" "t|50"
check "app's settings" "$NEW" "SELECT setconfig FROM pg_db_role_setting WHERE setrole = 'app'::regrole" "{statement_timeout=60s}"
check "analyst in reader" "$NEW" "SELECT pg_has_role('analyst', 'reader', 'MEMBER')" "t"
# Everything has the owner and grants it has on the old server.
check "owners of the tables" "$NEW" "SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables WHERE schemaname = 'public'" "app"
check "owner of the enum" "$NEW" "SELECT typowner::regrole FROM pg_type WHERE typname = 'status'" "app"
check "the database" "$NEW" "SELECT datdba::regrole || ' ' || array_to_string(setconfig, ',') FROM pg_database d, pg_db_role_setting s WHERE d.datname = 'shop' AND s.setdatabase = d.oid AND s.setrole = 0" "app work_mem=8MB"
check "grants" "$NEW" "SELECT has_table_privilege('reader', 'customers', 'UPDATE') AND NOT has_table_privilege('reader', 'orders', 'UPDATE')" "t"
check "default privileges (refunds came later)" "$NEW" "SELECT has_table_privilege('analyst', 'refunds', 'SELECT')" "t"
grep -q "^target: owners and grants: identical" guide.out || { say "FAIL: verify did not compare owners and grants"; exit 1; }
# Teardown left nothing behind unmentioned: the keyless table's identity is back, pgflow's
# schema is gone from both servers, and what it kept it named with the way to remove it.
check "audit's replica identity" "$OLD" "SELECT relreplident FROM pg_class WHERE relname = 'audit'" "d"
check "schema pgflow on the old server" "$OLD" "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgflow'" "0"
check "schema pgflow on the new server" "$NEW" "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgflow'" "0"
check "audit on the new server" "$NEW" "SELECT relreplident FROM pg_class WHERE relname = 'audit'" "d"
grep -q "^removed REPLICA IDENTITY FULL that pgflow set on audit" guide.out ||
  { say "FAIL: teardown did not say it gave audit its identity back"; exit 1; }
grep -q "^kept role flow's membership in app .*REVOKE \"app\" FROM \"flow\"" guide.out ||
  { say "FAIL: teardown did not name flow's membership in app"; exit 1; }
# pgflow asked before reading what its role may not read: no error in either server's log
# (the application's wrong password above is a FATAL, not an error).
for log in old/server.log new/server.log; do
  if grep -E "ERROR:" "$log"; then say "FAIL: errors in $log"; exit 1; fi
done
# The same grants, printed for a DBA.
PATH="$BUILD:$PATH" SOURCE_URL="postgres://postgres@127.0.0.1:$OLD/shop" \
  TARGET_URL="postgres://flow@127.0.0.1:$NEW/shop" \
  pgflow init shop-migrate.yaml --print-sql --grant-to flow >grants.sql
for expected in 'ALTER ROLE "flow" REPLICATION;' 'GRANT SELECT ON ALL TABLES IN SCHEMA "public" TO "flow";' \
  'ALTER DEFAULT PRIVILEGES FOR ROLE "app" IN SCHEMA "public" GRANT SELECT ON TABLES TO "flow";' \
  'GRANT SET ON PARAMETER session_replication_role TO "flow";'; do
  grep -qF "$expected" grants.sql || { say "FAIL: --print-sql lacks $expected"; cat grants.sql; exit 1; }
done
say "ok"
