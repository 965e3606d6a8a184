#!/usr/bin/env bash
# PostgreSQL's own regression suite (src/test/regress, parallel_schedule, pg_regress
# --use-existing) through `pgflow pooler` in session mode, against the same suite run directly:
#
#   1. One throwaway server, set up as tests/regress/regression_suite.sh does (its extra
#      settings; the suite from Debian's source package via fetch-suite.sh). The parallel
#      schedule runs directly on a fresh database `regression` (the baseline: the set of failed
#      tests; a few need the regress.so module nobody builds here and fail in every run).
#   2. The pooler starts in front of that server (session mode, a "*" database so that the
#      databases the suite creates and connects to are served too, pool_size 40, 2 threads,
#      trust with a users file). `regression` is dropped and created again directly (pg_regress
#      --use-existing neither drops nor creates it), and the same schedule runs through the
#      pooler's port.
#   3. Every test that fails through the pooler but not directly must be in EXPLAINED below,
#      with its reason and a pattern every changed line of its diff must match; any other one
#      (or a changed line outside its pattern) fails the script, its diff shown. A test that
#      fails directly but passes through the pooler is fine (flaky under load).
#   4. The pooler is still running at the end, and its log has no ERROR line.
#
# tests/regress/regression_suite.sh runs this at its end on its own server, its run without
# pgflow standing for step 1 (REGRESS_SHARED_PORT, REGRESS_SHARED_BASELINE): one server and
# one baseline for both. Run alone, it starts its own.
#
# Usage: tests/regress/pooler_regress.sh BUILD_DIR   (KEEP=1 keeps the work directory)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# Tests that fail through the pooler and not directly, each with why. A pooler hands a client
# a server backend another client used before (after DISCARD ALL), and `\c` in psql gets one
# back from the pool rather than a new backend: what a test sees of its backend's history is the
# only difference allowed. EXPLAINED_LINES is a Python regex every changed line (+/-) of the
# test's diff must match, EXPLAINED_HUNK a text each hunk with a change must contain: a diff
# with anything else is unexplained.
declare -A EXPLAINED=(
  [stats]="\\c reconnects to the pooler, which hands back a pooled backend: pg_stat_database.sessions does not grow"
  [temp]="\\c - gets a reused backend whose temporary namespace exists already, so current_schema() creates none and PREPARE TRANSACTION is not refused"
  [guc]="a reused backend has plpgsql loaded already by an earlier client, so SET plpgsql.extra_foo_warnings is refused at once instead of removed at LOAD"
)
declare -A EXPLAINED_LINES=(
  [stats]='^[-+] [tf]$'
  [temp]='^-ERROR:  cannot PREPARE a transaction that has operated on temporary objects$'
  [guc]='^[-+](ERROR|WARNING):  invalid configuration parameter name "plpgsql\.extra_foo_warnings"(, removing it)?$|^[-+]DETAIL:  "plpgsql" is (now )?a reserved prefix\.$'
)
declare -A EXPLAINED_HUNK=(
  [stats]='SELECT sessions > :db_stat_sessions FROM pg_stat_database'
  [temp]="PREPARE TRANSACTION 'twophase_search';"
  [guc]="LOAD 'plpgsql';"
)

WORK=$(mktemp -d /tmp/pgflow-pooler-regress.XXXXXX)
chmod 755 "$WORK"
POOLER_PID=
cleanup() {
  if [ -n "$POOLER_PID" ]; then kill "$POOLER_PID" 2>/dev/null || true; wait "$POOLER_PID" 2>/dev/null || true; fi
  "$ROOT/scripts/pgtmp.sh" stop "$WORK/pg" >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
say() { echo "[pooler-regress] $*"; }
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- The suite's sources, a server ----------------------------------------------------------
source "$ROOT/tests/regress/common.sh"
if [ -n "${REGRESS_SHARED_PORT:-}" ]; then
  # Run by regression_suite.sh on its server, with its run of the suite without pgflow as the
  # baseline (DIRECT/pg_regress.log, DIRECT.failed): one server and one baseline for both.
  PORT=$REGRESS_SHARED_PORT
  export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
  DIRECT=$REGRESS_SHARED_BASELINE
  say "directly (regression_suite.sh's baseline): $(wc -l <"$DIRECT.failed") test(s) fail: $(tr '\n' ' ' <"$DIRECT.failed")"
else
  start_server
  DIRECT=$WORK/direct

  # --- 1. Directly ---------------------------------------------------------------------------
  fresh_database
  say "directly: the parallel schedule on 127.0.0.1:$PORT"
  start=$(date +%s)
  run_suite "$PORT" "$DIRECT" >"$DIRECT.failed"
  say "directly: $(wc -l <"$DIRECT.failed") test(s) fail ($(($(date +%s) - start)) s): $(tr '\n' ' ' <"$DIRECT.failed")"
  grep -q "^ok\|ok " "$DIRECT/pg_regress.log" || { cat "$DIRECT/pg_regress.log"; exit 1; }
fi

# --- 2. Through the pooler -------------------------------------------------------------------
POOLER_PORT=$(free_port)
printf '"postgres" ""\n' >"$WORK/userlist.txt"
cat >"$WORK/pooler.yaml" <<YAML
listen: 127.0.0.1:$POOLER_PORT
threads: 2
admin: {listen: 127.0.0.1:$(free_port), users: [postgres]}
auth: {method: trust, users: $WORK/userlist.txt}
databases:
  "*": {url: postgres://postgres@127.0.0.1:$PORT/postgres, pool_mode: session, pool_size: 40}
YAML
"$PGFLOW" pooler --config "$WORK/pooler.yaml" >"$WORK/pooler.log" 2>&1 &
POOLER_PID=$!
for i in $(seq 300); do
  "$PGBIN/psql" -X -h 127.0.0.1 -p "$POOLER_PORT" -d postgres -Atqc 'select 1' >/dev/null 2>&1 && break
  kill -0 "$POOLER_PID" 2>/dev/null || { say "FAIL: the pooler exited:"; cat "$WORK/pooler.log"; exit 1; }
  [ "$i" = 300 ] && { say "FAIL: the pooler does not accept connections after 30 s:"; cat "$WORK/pooler.log"; exit 1; }
  sleep 0.1
done

fresh_database
say "through the pooler (session mode, 127.0.0.1:$POOLER_PORT)"
start=$(date +%s)
run_suite "$POOLER_PORT" "$WORK/pooled" >"$WORK/pooled.failed"
say "through the pooler: $(wc -l <"$WORK/pooled.failed") test(s) fail ($(($(date +%s) - start)) s): $(tr '\n' ' ' <"$WORK/pooled.failed")"

# --- 3. The differences ----------------------------------------------------------------------
status=0
total=$(tests_run "$WORK/pooled")
if [ "$total" != "$(tests_run "$DIRECT")" ]; then
  say "FAIL: pg_regress ran $(tests_run "$DIRECT") tests directly, $total through the pooler:"
  tail -n 30 "$WORK/pooled/pg_regress.log"
  status=1
fi
new_failures=$(comm -13 "$DIRECT.failed" "$WORK/pooled.failed" || true)
fixed=$(comm -23 "$DIRECT.failed" "$WORK/pooled.failed" || true)
explained_file=$WORK/explained.txt
: >"$explained_file"
for test in "${!EXPLAINED[@]}"; do
  printf '%s\t%s\t%s\t%s\n' "$test" "${EXPLAINED[$test]}" "${EXPLAINED_LINES[$test]}" "${EXPLAINED_HUNK[$test]}" >>"$explained_file"
done
# Prints "test<TAB>reason" for each explained failure; the others' diffs on stderr and their
# names as "UNEXPLAINED test".
verdicts=$(python3 - "$WORK/pooled/regression.diffs" "$explained_file" $new_failures <<'PY'
import re, sys
diffs, explained_file, tests = sys.argv[1], sys.argv[2], sys.argv[3:]
explained = {}
for line in open(explained_file):
    test, reason, pattern, hunk = line.rstrip("\n").split("\t")
    explained[test] = (reason, re.compile(pattern), hunk)
sections, current = {}, None
try:
    for line in open(diffs, errors="replace"):
        m = re.match(r"diff .* \S+/results/(\S+)\.out$", line.rstrip("\n"))
        if m:
            current = m.group(1)
            sections[current] = []
        elif current is not None:
            sections[current].append(line.rstrip("\n"))
except FileNotFoundError:
    pass
for test in tests:
    section = sections.get(test, [])
    changed = [l for l in section if l[:1] in "+-" and not l.startswith(("+++ ", "--- "))]
    if test in explained:
        reason, pattern, anchor = explained[test]
        stray = [l for l in changed if not pattern.search(l)]
        hunks, hunk = [], None
        for l in section:
            if l.startswith("@@"):
                hunk = []
                hunks.append(hunk)
            elif hunk is not None:
                hunk.append(l)
        for h in hunks:
            if not any(anchor in l for l in h):
                stray += [l for l in h if l[:1] in "+-" and l not in stray]
        if changed and not stray:
            print(f"{test}\t{reason}")
            continue
        print(f"UNEXPLAINED {test}")
        print(f"--- {test}: explained as '{reason}', but these changed lines are not that:", file=sys.stderr)
        for l in (stray or ["(no diff)"])[:40]:
            print("   ", l, file=sys.stderr)
        continue
    print(f"UNEXPLAINED {test}")
    print(f"--- {test}: fails through the pooler only; its diff:", file=sys.stderr)
    for l in (section or ["(no diff)"])[:200]:
        print("   ", l, file=sys.stderr)
    if len(section) > 200:
        print(f"    ... ({len(section) - 200} more lines; KEEP=1 keeps regression.diffs)", file=sys.stderr)
PY
)
unexplained=$(grep '^UNEXPLAINED ' <<<"$verdicts" | sed 's/^UNEXPLAINED //' || true)
if [ -n "$unexplained" ]; then
  say "FAIL: tests that fail through the pooler only, unexplained: $(echo $unexplained)"
  status=1
fi
[ -n "$fixed" ] && say "(failing directly but passing through the pooler, so flaky under load: $(echo $fixed))"

# --- 4. The pooler ---------------------------------------------------------------------------
if ! kill -0 "$POOLER_PID" 2>/dev/null; then
  say "FAIL: the pooler stopped during the suite:"; tail -n 30 "$WORK/pooler.log"; status=1
elif ! "$PGBIN/psql" -X -h 127.0.0.1 -p "$POOLER_PORT" -d regression -Atqc 'select 1' >/dev/null 2>&1; then
  say "FAIL: the pooler no longer answers after the suite:"; tail -n 30 "$WORK/pooler.log"; status=1
fi
if grep -E '^[^ ]+ +ERROR ' "$WORK/pooler.log" >/dev/null; then
  say "FAIL: errors in the pooler's log:"; grep -E '^[^ ]+ +ERROR ' "$WORK/pooler.log" | head -n 20; status=1
fi
warnings=$(grep -cE '^[^ ]+ +WARN' "$WORK/pooler.log" || true)
[ "$warnings" != 0 ] && { say "pooler warnings ($warnings):"; grep -E '^[^ ]+ +WARN' "$WORK/pooler.log" | sort | uniq -c | sort -rn | head -n 10 | sed 's/^/[pooler-regress]   /'; }

if [ "$status" = 0 ]; then
  listed=$(grep -v '^UNEXPLAINED ' <<<"$verdicts" | sort | awk -F'\t' 'NF { printf "%s%s (%s)", sep, $1, $2; sep = ", " }')
  say "$total tests, same results directly and through the pooler except: ${listed:-none}"
fi
exit $status
