#!/usr/bin/env bash
# Benchmark: a zero-downtime cutover under load, `pgflow cutover` against the by-hand recipe
# with PgBouncer (Debian's package, installed when missing), in one run.
#
# Two throwaway servers, A and B. For each contender a database pair of its own (pgbench -i
# -s SCALE on A, pgbench_history given a bigserial key so that B's sequence matters), a
# pipeline copying A into B (`pgflow run`), and a pooler in front of A in transaction mode:
#   pgflow:    `pgflow pooler`; mid-load, `pgflow cutover` (checks, verify --live while the
#              load goes on, the stream back's file and publication; then pause, fence,
#              catch-up, sequences, the stream back's slot, RETARGET, resume; then the handover
#              to the stream back)
#   by hand:   PgBouncer; mid-load, the recipe migration guides print: PAUSE, wait until the
#              slot has confirmed A's WAL position, `pgflow sequences`, point pgbouncer.ini at
#              B and RELOAD, RESUME
# pgbench writes through the pooler (default TPC-B script, -c 8 -j 8, -R RATE (default 1000),
# -T SECONDS (default 20), per-transaction log); the cutover starts after CUT_AT seconds
# (default 8). Printed for each: failed transactions, the longest transaction latency during
# the cutover beside the median outside it, the time clients were paused; for pgflow each
# step's time. Goals: the longest client-visible wait under 1 s, 0 failed transactions, the
# pause at most 2x the time B needed to catch up.
# The machine may be shared: the figures are of one run, side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${SCALE:-10}
RATE=${RATE:-1000}
SECONDS_LOAD=${SECONDS_LOAD:-20}
CUT_AT=${CUT_AT:-8}
source bench/common.sh   # server A ($PGPORT), $work
BPORT=$(scripts/pgtmp.sh start "$work/b")
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$work/bouncer/pgbouncer.pid" ] && kill "$(cat "$work/bouncer/pgbouncer.pid")" 2>/dev/null; scripts/pgtmp.sh stop "$work/b"; scripts/pgtmp.sh stop "$work/pg"; rm -rf "$work"' EXIT
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
if [ ! -x "$PGBOUNCER" ]; then
  echo "installing pgbouncer (Debian)"
  DEBIAN_FRONTEND=noninteractive apt-get -qq install -y pgbouncer >/dev/null 2>&1 ||
    { apt-get -qq update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get -qq install -y pgbouncer >/dev/null; }
fi
printf '"postgres" ""\n' >"$work/userlist.txt"

# A database pair $1 with pgbench's tables on A, and `pgflow run` copying it into B, streaming;
# its admin endpoint on port $2.
prepare() {
  psql -q -d postgres -c "CREATE DATABASE $1"
  psql -q -p "$BPORT" -d postgres -c "CREATE DATABASE $1"
  pgbench -i -q -s "$SCALE" "$1" >"$work/$1-init.log" 2>&1 || { cat "$work/$1-init.log" >&2; exit 1; }
  psql -q -d "$1" -c "ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY"
  cat >"$work/$1.yaml" <<YAML
pipeline: $1
source:
  postgres: {url: 'postgres://postgres@127.0.0.1:$PGPORT/$1', tables: [public.*], status_interval: 200ms}
sinks:
  target: {postgres: {url: 'postgres://postgres@127.0.0.1:$BPORT/$1'}, flush_interval: 20ms}
admin: {listen: 127.0.0.1:$2}
YAML
  "$PGFLOW_BINARY" run "$work/$1.yaml" >"$work/$1-run.log" 2>&1 &
  for _ in $(seq 600); do grep -q "streaming from" "$work/$1-run.log" && return; sleep 0.1; done
  echo "the pipeline $1 does not stream after 60 s:" >&2; tail -n 20 "$work/$1-run.log" >&2; exit 1
}

# pgbench through port $1 into database $2, logging each transaction under $work/$3.
load() {
  pgbench -n -c 8 -j 8 -R "$RATE" -T "$SECONDS_LOAD" -h 127.0.0.1 -p "$1" -U postgres \
    -l --log-prefix="$work/$3" "$2" >"$work/$3.out" 2>&1 || true
}

# Latency figures from $work/$1.* (pgbench's log: client, transaction, latency us, script,
# epoch s, us) between times $2 and $3 (epoch seconds): the longest during, the median outside.
latencies() {
  python3 - "$work/$1" "$2" "$3" <<'PY'
import glob, statistics, sys
prefix, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
during, outside = [], []
for path in glob.glob(prefix + ".*"):
    for line in open(path):
        f = line.split()
        if len(f) < 6 or not f[2].isdigit():
            continue
        latency = int(f[2]) / 1000.0
        done = int(f[4]) + int(f[5]) / 1e6
        began = done - latency / 1000.0
        (during if began <= end and done >= start else outside).append(latency)
print(f"{max(during) if during else 0:.1f} {statistics.median(outside) if outside else 0:.1f} {len(during)}")
PY
}

summary() {  # name
  local out="$work/$1.out"
  echo "  processed $(sed -n 's/^number of transactions actually processed: //p' "$out"), failed $(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")$(grep -q aborted "$out" && echo ', CLIENTS ABORTED')"
}

read -r ADMIN1 ADMIN2 POOLER_PORT BOUNCER_PORT < <(scripts/free_ports 4)

# --- pgflow cutover -----------------------------------------------------------------------------
prepare cut_pgflow "$ADMIN1"
cat >"$work/pooler.yaml" <<YAML
listen: 127.0.0.1:$POOLER_PORT
admin: {users: [postgres]}
auth: {method: trust, users: $work/userlist.txt}
databases:
  app: {url: 'postgres://postgres@127.0.0.1:$PGPORT/cut_pgflow', pool_mode: transaction, pool_size: 20}
YAML
"$PGFLOW_BINARY" pooler --config "$work/pooler.yaml" >"$work/pooler.log" 2>&1 &
for _ in $(seq 100); do psql -h 127.0.0.1 -p "$POOLER_PORT" -d app -Atqc 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
echo "pgflow: pgbench -c 8 -R $RATE -T $SECONDS_LOAD through pgflow pooler, cutover at ${CUT_AT}s"
load "$POOLER_PORT" app pgflow &
LOAD=$!
sleep "$CUT_AT"
t0=$(now)
"$PGFLOW_BINARY" cutover "$work/cut_pgflow.yaml" --pooler "postgres://postgres@127.0.0.1:$POOLER_PORT/pgflow" \
  --database app --json >"$work/cutover.json" 2>"$work/cutover.err" || { cat "$work/cutover.json" "$work/cutover.err" >&2; exit 1; }
t1=$(now)
wait $LOAD
read -r PG_MAX PG_MEDIAN PG_DURING < <(latencies pgflow "$t0" "$t1")
python3 - "$work/cutover.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"  outcome {r['outcome']}; clients paused {r['paused_seconds'] * 1000:.1f} ms")
for s in r["steps"]:
    print(f"  {s['step']:<10} {s['seconds'] * 1000:8.1f} ms  {s['detail']}")
PY
summary pgflow
PG_PAUSE=$(python3 -c "import json; print(f\"{json.load(open('$work/cutover.json'))['paused_seconds'] * 1000:.1f}\")")
PG_CATCHUP=$(python3 -c "import json; print(f\"{[s for s in json.load(open('$work/cutover.json'))['steps'] if s['step'] == 'catch-up'][0]['seconds'] * 1000:.1f}\")")
PG_FAILED=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$work/pgflow.out")

# --- by hand, with PgBouncer --------------------------------------------------------------------
prepare cut_hand "$ADMIN2"
mkdir -p "$work/bouncer"
cp "$work/userlist.txt" "$work/bouncer/"
bouncer_ini() {  # the port of the server database cut_hand is on
  cat >"$work/bouncer/pgbouncer.ini" <<INI
[databases]
app = host=127.0.0.1 port=$1 dbname=cut_hand user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $work/bouncer/userlist.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = 20
ignore_startup_parameters = extra_float_digits
logfile = $work/bouncer/pgbouncer.log
pidfile = $work/bouncer/pgbouncer.pid
INI
}
bouncer_ini "$PGPORT"
touch "$work/bouncer/pgbouncer.log"
if [ "$(id -u)" = 0 ]; then
  chown -R postgres:postgres "$work/bouncer"
  runuser -u postgres -- "$PGBOUNCER" -d "$work/bouncer/pgbouncer.ini"
else
  "$PGBOUNCER" -d "$work/bouncer/pgbouncer.ini"
fi
for _ in $(seq 100); do psql -h 127.0.0.1 -p "$BOUNCER_PORT" -d app -Atqc 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
echo "by hand: pgbench -c 8 -R $RATE -T $SECONDS_LOAD through $("$PGBOUNCER" --version | head -n 1), cutover at ${CUT_AT}s"
load "$BOUNCER_PORT" app hand &
LOAD=$!
sleep "$CUT_AT"
admin() { psql -h 127.0.0.1 -p "$BOUNCER_PORT" -U postgres -d pgbouncer -Atqc "$1" >/dev/null; }
t0=$(now)
admin "PAUSE app"
t_paused=$(now)
LSN=$(psql -Atq -d cut_hand -c "SELECT pg_current_wal_lsn()")
until [ "$(psql -Atq -d cut_hand -c "SELECT confirmed_flush_lsn >= '$LSN' FROM pg_replication_slots WHERE slot_name = 'pgflow_cut_hand'")" = t ]; do
  sleep 0.005
done
t_caught=$(now)
"$PGFLOW_BINARY" sequences "$work/cut_hand.yaml" >/dev/null 2>&1
t_seq=$(now)
bouncer_ini "$BPORT"
admin "RELOAD"
admin "RESUME app"
t1=$(now)
wait $LOAD
read -r HAND_MAX HAND_MEDIAN HAND_DURING < <(latencies hand "$t0" "$t1")
ms() { python3 -c "print(f'{($2 - $1) * 1000:.1f}')"; }
HAND_PAUSE=$(ms "$t0" "$t1")
HAND_CATCHUP=$(ms "$t_paused" "$t_caught")
echo "  clients paused $HAND_PAUSE ms: pause $(ms "$t0" "$t_paused") ms, catch-up $HAND_CATCHUP ms, sequences $(ms "$t_caught" "$t_seq") ms, reload and resume $(ms "$t_seq" "$t1") ms"
summary hand
HAND_FAILED=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$work/hand.out")

echo
echo "                   longest wait   median outside   paused      catch-up    failed"
printf "pgflow cutover     %9s ms   %11s ms   %7s ms  %7s ms  %s\n" "$PG_MAX" "$PG_MEDIAN" "$PG_PAUSE" "$PG_CATCHUP" "$PG_FAILED"
printf "by hand, pgbouncer %9s ms   %11s ms   %7s ms  %7s ms  %s\n" "$HAND_MAX" "$HAND_MEDIAN" "$HAND_PAUSE" "$HAND_CATCHUP" "$HAND_FAILED"
python3 - "$PG_MAX" "$PG_PAUSE" "$PG_CATCHUP" "$PG_FAILED" "$HAND_MAX" <<'PY'
import sys
longest, pause, catchup, failed, hand = map(float, sys.argv[1:6])
print(f"pgflow longest wait / by hand: {longest / hand:.2f}; "
      f"longest wait {longest:.0f} ms (goal < 1000), failed {failed:.0f} (goal 0), "
      f"pause / catch-up {pause / catchup if catchup else float('inf'):.2f} (goal <= 2)")
PY
