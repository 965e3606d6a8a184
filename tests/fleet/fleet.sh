#!/usr/bin/env bash
# A fleet of poolers on one port (SO_REUSEPORT), under clients that connect for each
# transaction (tests/fleet/load.py, psycopg): one pooler killed -9, then the others replaced
# one by one (a new pooler on the port, then SHUTDOWN WAIT_FOR_CLIENTS of an old one). Every
# transaction commits but those under way on the killed pooler; every other pooler serves
# clients. docs/guides/pooler.md, "A fleet".
#
# Everything runs in a network namespace of its own, where net.ipv4.tcp_migrate_req is on: a
# pooler that stops listening hands the connections its kernel queue holds to the others
# instead of resetting them (the setting the guide asks of a fleet's hosts).
#
# Usage: tests/fleet/fleet.sh BUILD_DIR   (KEEP=1 keeps the work directory)
set -euo pipefail
source "$(dirname "$0")/../drivers/script_env.sh" fleet "$@"
NS=pgflow-fleet-$$
declare -A PID=()
cleanup() {
  for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PID[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns exec "$NS" "$ROOT/scripts/pgtmp.sh" stop "$WORK/pg" >/dev/null 2>&1 || true
  ip netns del "$NS" 2>/dev/null || true
  remove_work
}
trap cleanup EXIT
fail() { say "FAILED: $*"; for f in "$WORK"/p*.log; do echo "--- $f"; tail -15 "$f"; done; exit 1; }
in_ns() { ip netns exec "$NS" "$@"; }

source "$HERE/install.sh"
install_drivers python

ip netns add "$NS"
in_ns ip link set lo up
in_ns sysctl -q -w net.ipv4.tcp_migrate_req=1
PGPORT=$(in_ns "$ROOT/scripts/pgtmp.sh" start "$WORK/pg")
in_ns psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres \
  -c "CREATE DATABASE app" >/dev/null
in_ns psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" -U postgres -d app \
  -c "CREATE TABLE hits (id bigserial PRIMARY KEY, at timestamptz)" >/dev/null

PORT=6432
printf '"postgres" ""\n' >"$WORK/users.txt"
# Pooler $1: the shared port, a Unix socket of its own (its console, whichever pooler the
# kernel hands a TCP client to).
start_pooler() {
  mkdir -p "$WORK/$1"
  cat >"$WORK/$1.yaml" <<YAML
listen: 127.0.0.1:$PORT
unix_socket_dir: $WORK/$1
threads: 1
admin: {users: [postgres]}
auth: {method: trust, users: $WORK/users.txt}
databases:
  app: {url: "postgres://postgres@127.0.0.1:$PGPORT/app", pool_mode: transaction, pool_size: 4}
YAML
  # (ip netns exec execs the pooler: $! is the pooler's own pid, not a shell's.)
  ip netns exec "$NS" "$PGFLOW" pooler --config "$WORK/$1.yaml" >"$WORK/$1.log" 2>&1 &
  PID[$1]=$!
  for _ in $(seq 100); do
    console "$1" "SHOW VERSION" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  fail "pooler $1 did not start"
}
console() { in_ns psql -X -At -h "$WORK/$1" -p "$PORT" -U postgres -d pgflow -c "$2"; }
served() {  # transactions pooler $1 completed
  console "$1" "SHOW STATS" | awk -F'|' '$1 == "app" {n += $3} END {print n + 0}'
}
now() { date +%s.%N; }

for p in p1 p2 p3; do start_pooler "$p"; done
[ "$(cat "/proc/${PID[p1]}/comm")" = pgflow ] || fail "the pid kept is not the pooler's"
say "three poolers on 127.0.0.1:$PORT (pids ${PID[p1]} ${PID[p2]} ${PID[p3]})"
SECONDS_OF_LOAD=16
ip netns exec "$NS" "$CACHE/venv/bin/python" "$ROOT/tests/fleet/load.py" \
  --dsn "host=127.0.0.1 port=$PORT user=postgres dbname=app" --threads 8 \
  --seconds "$SECONDS_OF_LOAD" --out "$WORK/attempts.txt" &
LOAD=$!
sleep 3
for p in p1 p2 p3; do [ "$(served "$p")" -gt 0 ] || fail "pooler $p served no client"; done
killed_at=$(now)
kill -9 "${PID[p1]}"
wait "${PID[p1]}" 2>/dev/null || true
unset 'PID[p1]'
say "pooler p1 killed -9"
sleep 2
start_pooler p4
# The rolling replacement: a new pooler on the port, then the old one told to leave once its
# clients have; none of theirs fails.
for old in p2 p3; do
  new=$([ "$old" = p2 ] && echo p5 || echo p6)
  start_pooler "$new"
  console "$old" "SHUTDOWN WAIT_FOR_CLIENTS" >/dev/null
  wait "${PID[$old]}" || fail "pooler $old did not stop cleanly"
  unset "PID[$old]"
  say "pooler $old replaced by $new"
  sleep 2
done
wait "$LOAD" || fail "the load ended with an error"

committed=$(in_ns psql -X -At -h 127.0.0.1 -p "$PGPORT" -U postgres -d app -c "SELECT count(*) FROM hits")
python3 - "$WORK/attempts.txt" "$killed_at" "$committed" <<'PY' || fail "the clients' outcome"
import sys
lines = [l.split(" ", 3) for l in open(sys.argv[1]) if l.strip()]
killed_at, committed = float(sys.argv[2]), int(sys.argv[3])
ok = [l for l in lines if l[0] == "ok"]
failed = [l for l in lines if l[0] == "fail"]
# Under way on p1 when it was killed: begun before the kill and ended with it.
in_flight = [l for l in failed if float(l[1]) <= killed_at + 0.05 and float(l[2]) >= killed_at - 0.05]
others = [l for l in failed if l not in in_flight]
print(f"[fleet] {len(ok)} transactions committed, {len(failed)} failed: {len(in_flight)} under way "
      f"on the killed pooler, {len(others)} others; {committed} rows in the table")
for l in (in_flight + others)[:5]:
    print(f"[fleet]   {l}")
assert len(ok) > 200, "too few transactions to tell anything"
assert not others, "transactions failed that were not under way on the killed pooler"
assert len(in_flight) <= 8, "more failures than clients under way"
# Every commit a client was told of is there; a failed one may have committed before the kill.
assert len(ok) <= committed <= len(ok) + len(in_flight), "commits and rows disagree"
PY
for p in p4 p5 p6; do [ "$(served "$p")" -gt 0 ] || fail "pooler $p took no client"; done
say "every new pooler took clients; the fleet lost only what was under way on the killed one"
