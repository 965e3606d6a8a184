#!/usr/bin/env bash
# PostgreSQL's own regression suite, a schema no one here wrote (hundreds of tables, every
# built-in type, domains, enums, inheritance, partitions, dropped columns), as a user of pgflow
# would meet it:
#
#   1. The suite runs once without pgflow (the baseline: a few tests need the regress.so module
#      this script does not build, and fail in every run), then again on a fresh database while
#      a pipeline follows public.* into a jsonl file, once with each keyless_tables policy that
#      lets the application run (full, skip). The failing tests must be the same, but for
#      event_trigger and publication (which list pgflow's own trigger and publication). pgflow
#      must end caught up, without an error.
#   2. `pgflow run` with `snapshot: only` and a `postgres` sink migrates the finished database's
#      public schema into an empty database; `pgflow verify` must find every table identical.
#   3. The suite through `pgflow pooler` in session mode (tests/regress/pooler_regress.sh, on
#      this server, against the baseline of step 1).
#
# The suite comes from Debian's source package of the installed server (`apt-get source`, with a
# deb-src entry in a private apt configuration, never the machine's), cached in the build tree;
# pg_regress from postgresql-client. Usage: tests/regress/regression_suite.sh BUILD_DIR
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/pgflow-regress.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  "$ROOT/scripts/pgtmp.sh" stop "$WORK/pg" >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
say() { echo "[regress] $*"; }
# The first N lines of the input, reading all of it (no SIGPIPE for the writer).
first() { head -n "$1"; cat >/dev/null; }

# --- The suite's sources, a server ----------------------------------------------------------
source "$ROOT/tests/regress/common.sh"
start_server
URL="postgres://postgres@127.0.0.1:$PORT"

# --- 1. The suite without pgflow, then with it ---------------------------------------------
fresh_database
say "baseline: the suite without pgflow"
start=$(date +%s)
run_suite "$PORT" "$WORK/base" >"$WORK/base.failed"
say "baseline: $(wc -l <"$WORK/base.failed") test(s) fail without pgflow ($(($(date +%s) - start)) s): $(tr '\n' ' ' <"$WORK/base.failed")"
grep -q "^ok\|ok " "$WORK/base/pg_regress.log" || { cat "$WORK/base/pg_regress.log"; exit 1; }

# Runs the suite on a fresh database while a pipeline with keyless_tables: $1 follows public.*
# into a jsonl file; sets status=1 on a failure.
follow_suite() {
  local policy=$1
  fresh_database
  cat >"$WORK/follow-$policy.yaml" <<YAML
pipeline: regress
source:
  postgres:
    url: $URL/regression
    tables: [public.*]
    snapshot: {mode: never}
    keyless_tables: $policy
sinks:
  out: {jsonl: {path: $WORK/follow-$policy.jsonl}}
YAML
  "$PGFLOW" run "$WORK/follow-$policy.yaml" >"$WORK/follow-$policy.log" 2>&1 &
  PIDS+=($!)
  follow_pid=$!
  for _ in $(seq 1 300); do
    grep -q "streaming from" "$WORK/follow-$policy.log" && break
    kill -0 "$follow_pid" 2>/dev/null || { cat "$WORK/follow-$policy.log"; exit 1; }
    sleep 0.1
  done
  say "with pgflow following public.* (keyless_tables: $policy)"
  start=$(date +%s)
  run_suite "$PORT" "$WORK/flow-$policy" >"$WORK/flow-$policy.failed"
  say "with pgflow ($policy): $(wc -l <"$WORK/flow-$policy.failed") test(s) fail ($(($(date +%s) - start)) s)"
  # A test that fails only with pgflow passes if its output differs by nothing but psql's
  # description of a table listing pgflow's publication and REPLICA IDENTITY FULL (what
  # following a table means); anything else is a failure, shown.
  new_failures=$(comm -13 "$WORK/base.failed" "$WORK/flow-$policy.failed" | grep -vx -e event_trigger -e publication || true)
  fixed=$(comm -23 "$WORK/base.failed" "$WORK/flow-$policy.failed" || true)
  extra=$(python3 - "$WORK/flow-$policy/regression.diffs" $new_failures <<'PY'
import re, sys
diffs, tests = sys.argv[1], sys.argv[2:]
sections, current = {}, None
for line in open(diffs, errors="replace"):
    m = re.match(r"diff .* \S+/results/(\S+)\.out$", line.rstrip("\n"))
    if m:
        current = m.group(1)
        sections[current] = []
    elif current is not None:
        sections[current].append(line.rstrip("\n"))
allowed = {"+Publications:", '+    "pgflow_regress"', "+Replica Identity: FULL"}
for test in tests:
    changed = [l for l in sections.get(test, ["(no diff)"])
               if l[:1] in "+-" and not l.startswith(("+++", "---")) and l not in allowed]
    if changed:
        print(test)
        for l in changed[:15]:
            print("   ", l, file=sys.stderr)
PY
  )
  described=$(echo $new_failures)
  say "tests whose output differs only by pgflow's publication or REPLICA IDENTITY FULL in psql's \\d: ${described:-none}"
  if [ -n "$extra" ]; then
    say "FAIL: tests that fail only with pgflow: $(echo $extra)"
    status=1
  fi
  [ -n "$fixed" ] && say "(passing only with pgflow, so flaky under load: $(echo $fixed))"

  # Caught up, without an error.
  end=$(psql_ -d regression -Atc "SELECT pg_current_wal_lsn()")
  caught_up=f
  for _ in $(seq 1 1200); do
    caught_up=$(psql_ -d regression -Atc "SELECT coalesce(bool_or(confirmed_flush_lsn >= '$end'), false) FROM pg_replication_slots WHERE slot_name = 'pgflow_regress'")
    [ "$caught_up" = t ] && break
    kill -0 "$follow_pid" 2>/dev/null || break
    sleep 0.1
  done
  if ! kill -0 "$follow_pid" 2>/dev/null; then
    say "FAIL: pgflow stopped during the suite"; tail -n 20 "$WORK/follow-$policy.log"; status=1
  elif [ "$caught_up" != t ]; then
    say "FAIL: pgflow did not catch up to $end"; tail -n 5 "$WORK/follow-$policy.log"; status=1
  fi
  kill -INT "$follow_pid" 2>/dev/null || true
  wait "$follow_pid" || { say "FAIL: pgflow exited with $?"; status=1; }
  if grep -E " (ERROR) " "$WORK/follow-$policy.log" >/dev/null; then
    say "FAIL: errors in pgflow's log:"; grep -E " ERROR " "$WORK/follow-$policy.log" | first 10; status=1
  fi
  events=$(wc -l <"$WORK/follow-$policy.jsonl")
  ddl=$(grep -c '"op":"ddl"' "$WORK/follow-$policy.jsonl" || true)
  say "pgflow streamed $events events ($ddl DDL) and ended caught up at $end"
  grep -E "set REPLICA IDENTITY FULL|keyless_tables: skip:" "$WORK/follow-$policy.log" | first 3 | sed 's/^/[regress]   /' || true
  "$PGFLOW" teardown "$WORK/follow-$policy.yaml" >/dev/null
}

status=0
for policy in full skip; do follow_suite "$policy"; done

# --- 2. The finished database migrated, then verified ---------------------------------------
psql_ -d postgres -c "CREATE DATABASE migrated TEMPLATE template0"
cat >"$WORK/migrate.yaml" <<YAML
pipeline: migrate
source:
  postgres:
    url: $URL/regression
    tables: [public.*]
    snapshot: {mode: only}
sinks:
  target: {postgres: {url: $URL/migrated}}
YAML
start=$(date +%s)
if ! "$PGFLOW" run "$WORK/migrate.yaml" >"$WORK/migrate.log" 2>&1; then
  say "FAIL: the migration stopped:"; grep -E "ERROR|WARN" "$WORK/migrate.log" | tail -n 10; status=1
fi
say "migration: $(grep -o 'snapshot: done.*' "$WORK/migrate.log" | first 1) ($(($(date +%s) - start)) s)"
grep -E " WARN " "$WORK/migrate.log" | first 10 | sed 's/^/[regress]   /' || true
if "$PGFLOW" verify "$WORK/migrate.yaml" >"$WORK/verify.out" 2>&1; then
  say "verify: $(tail -n 1 "$WORK/verify.out")"
else
  say "FAIL: verify found differences:"; grep -v ": identical" "$WORK/verify.out" | first 30
  status=1
fi

# --- 3. Through the pooler -------------------------------------------------------------------
REGRESS_SHARED_PORT=$PORT REGRESS_SHARED_BASELINE=$WORK/base \
  bash "$ROOT/tests/regress/pooler_regress.sh" "$BUILD" || status=1
exit $status
