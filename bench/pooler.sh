#!/usr/bin/env bash
# Benchmark: `pgflow pooler` against PgBouncer (Debian's package, installed when missing), both
# in transaction mode with a pool of 20 server connections, on one throwaway PostgreSQL
# (max_connections raised to 200), in one run:
#
# 1. Throughput: `pgbench -i -s 10`, then `pgbench -S -c 50 -j 2 -T BENCH_SECONDS` (default 20)
#    with `-M simple` and `-M extended`, ROUNDS times (default 2; the order reversed every
#    other round, and the summary gives means), through pgflow's pooler, through PgBouncer and
#    direct to PostgreSQL (50 backends: the third figure). TPS of each, pgflow/pgbouncer (goal >= 1.0;
#    each round's ratio too, and the 95% confidence interval of their mean, which tells a
#    difference from the rounds' noise),
#    and CPU seconds per 1,000 transactions of each pooler process (utime + stime from
#    /proc/PID/stat around the run) and of the PostgreSQL cluster. Also through a second pgflow
#    pooler with `scheduling: normal` (pgflow-normal), the kernel's default scheduling instead
#    of SCHED_BATCH, with the PostgreSQL backends' involuntary context switches per transaction
#    for each pooler: what the default buys.
# 2. Idle clients: IDLE_CLIENTS (default 15,000) logged-in idle client connections opened to
#    each pooler in turn (a Python asyncio client, standard library only: StartupMessage,
#    AuthenticationOk under trust, up to ReadyForQuery, then one query, SELECT 1, as an
#    application's first transaction); each pooler's VmRSS before and 3 s after all are
#    connected and idle: bytes of resident memory per idle client, and the ratio.
#
# POOLER_THREADS sets pgflow's `threads` (default: its own, one per two cores).
# PGFLOW_BINARY runs another build of pgflow (default build/pgflow): an earlier commit's, to
# compare a change with what it changed in the same hour.
# POOLERS (default "pgflow pgflow-normal pgbouncer") picks the poolers, e.g. POOLERS=pgbouncer
# (idle clients are measured for pgflow and pgbouncer). Poolers and
# clients need `ulimit -n` above IDLE_CLIENTS: the script raises the soft limit to the hard one.
# The machine may be shared: the figures are of one run, side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_SECONDS=${BENCH_SECONDS:-20}
ROUNDS=${ROUNDS:-2}
IDLE_CLIENTS=${IDLE_CLIENTS:-15000}
CLIENTS=${CLIENTS:-50}
PGFLOW_BINARY=${PGFLOW_BINARY:-build/pgflow}
POOL_SIZE=20
POOLERS=" ${POOLERS:-pgflow pgflow-normal pgbouncer} "
POOLERS=${POOLERS//,/ }
for p in $POOLERS; do
  case "$p" in pgflow|pgflow-normal|pgbouncer) ;; *) echo "POOLERS: unknown pooler $p (pgflow, pgflow-normal, pgbouncer)" >&2; exit 2 ;; esac
done
want() { [[ "$POOLERS" == *" $1 "* ]]; }
MAX_CLIENT_CONN=$(( IDLE_CLIENTS + 100 > 20000 ? IDLE_CLIENTS + 100 : 20000 ))

# File descriptors: each pooler holds IDLE_CLIENTS sockets, and so does the client script.
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt $((IDLE_CLIENTS + 200)) ]; then
  echo "IDLE_CLIENTS=$IDLE_CLIENTS needs ulimit -n >= $((IDLE_CLIENTS + 200)); the hard limit is $hard" >&2
  exit 1
fi
if [ "$hard" = unlimited ] || [ "$hard" -gt $((MAX_CLIENT_CONN + 1000)) ]; then
  ulimit -n $((MAX_CLIENT_CONN + 1000))
else
  ulimit -n "$hard"
fi

if want pgbouncer && ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
  echo "installing pgbouncer (Debian)"
  DEBIAN_FRONTEND=noninteractive apt-get -qq install -y pgbouncer >/dev/null 2>&1 ||
    { apt-get -qq update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get -qq install -y pgbouncer >/dev/null; }
fi
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)

source bench/common.sh
PGFLOW_PID= NORMAL_PID= BOUNCER_PID= IDLE_PID=
cleanup() {
  if [ -n "$IDLE_PID" ]; then kill "$IDLE_PID" 2>/dev/null || true; fi
  for pid in $PGFLOW_PID $NORMAL_PID; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  if [ -n "$BOUNCER_PID" ]; then kill "$BOUNCER_PID" 2>/dev/null || true; fi
  scripts/pgtmp.sh stop "$work/pg"
  rm -rf "$work"
}
trap cleanup EXIT

# The poolers' ports, all distinct.
read -r PGFLOW_PORT ADMIN_PORT NORMAL_PORT NORMAL_ADMIN_PORT BOUNCER_PORT < <(scripts/free_ports 5)
proc_cpu() {  # CPU seconds (user + system, all threads) process $1 has used so far
  awk -v t="$(getconf CLK_TCK)" '{sub(/.*\) /, ""); split($0, f, " "); printf "%.3f", (f[12] + f[13]) / t}' "/proc/$1/stat"
}
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
wait_accepting() {  # name port pid log: until `select 1` goes through, at most 30 s
  for _ in $(seq 300); do
    psql -h 127.0.0.1 -p "$2" -d bench -Atqc 'select 1' >/dev/null 2>&1 && return
    kill -0 "$3" 2>/dev/null || { echo "$1 exited:" >&2; cat "$4" >&2; exit 1; }
    sleep 0.1
  done
  echo "$1 does not accept connections on port $2 after 30 s:" >&2; cat "$4" >&2; exit 1
}

# PostgreSQL: room for 50 direct clients and both pools at once.
psql -q -d postgres -c "ALTER SYSTEM SET max_connections = 200"
scripts/pgtmp.sh pause "$work/pg"
scripts/pgtmp.sh resume "$work/pg"
echo "pgbench -i -s 10"
pgbench -i -s 10 -q bench >"$work/pgbench-init.log" 2>&1 || { cat "$work/pgbench-init.log" >&2; exit 1; }
printf '"postgres" ""\n' >"$work/userlist.txt"

start_pgflow() {  # name port admin-port scheduling: sets STARTED_PID
  cat >"$work/$1.yaml" <<YAML
listen: 127.0.0.1:$2
${POOLER_THREADS:+threads: $POOLER_THREADS}
scheduling: $4
admin: {listen: 127.0.0.1:$3, users: [postgres]}
auth: {method: trust, users: $work/userlist.txt}
max_client_conn: $MAX_CLIENT_CONN
databases:
  bench: {url: postgres://postgres@127.0.0.1:$PGPORT/bench, pool_mode: transaction, pool_size: $POOL_SIZE}
YAML
  "$PGFLOW_BINARY" pooler --config "$work/$1.yaml" >"$work/$1.log" 2>&1 &
  STARTED_PID=$!
  wait_accepting "$1 pooler (POOLERS=pgbouncer skips it)" "$2" "$STARTED_PID" "$work/$1.log"
  echo "$1 pooler, scheduling: $4: 127.0.0.1:$2 (pid $STARTED_PID)"
}
if want pgflow; then
  start_pgflow pgflow "$PGFLOW_PORT" "$ADMIN_PORT" batch
  PGFLOW_PID=$STARTED_PID
fi
if want pgflow-normal; then
  start_pgflow pgflow-normal "$NORMAL_PORT" "$NORMAL_ADMIN_PORT" normal
  NORMAL_PID=$STARTED_PID
fi

if want pgbouncer; then
  bdir="$work/pgbouncer"
  mkdir -p "$bdir"
  cp "$work/userlist.txt" "$bdir/userlist.txt"
  cat >"$bdir/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PGPORT dbname=bench user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $bdir/userlist.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = $MAX_CLIENT_CONN
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
logfile = $bdir/pgbouncer.log
pidfile = $bdir/pgbouncer.pid
INI
  BOUNCER_PID=$(launch_pgbouncer "$bdir" "$bdir/pgbouncer.ini" "$bdir/pgbouncer.pid" \
                                 "$bdir/pgbouncer.log") || exit 1
  wait_accepting pgbouncer "$BOUNCER_PORT" "$BOUNCER_PID" "$bdir/pgbouncer.log"
  echo "$("$PGBOUNCER" --version | head -n 1): 127.0.0.1:$BOUNCER_PORT (pid $BOUNCER_PID)"
fi

for pid in $PGFLOW_PID $NORMAL_PID $BOUNCER_PID; do
  files=$(awk '/^Max open files/{print $4}' "/proc/$pid/limits")
  [ "$files" = unlimited ] || [ "$files" -ge $((IDLE_CLIENTS + 100)) ] ||
    echo "warning: pid $pid may open only $files files, fewer than IDLE_CLIENTS + 100" >&2
done

# --- 1. pgbench -S through each --------------------------------------------------------------
: >"$work/results"
cluster_preemptions() {  # involuntary context switches of the cluster's backends so far
  # (Processes come and go meanwhile: read through cat, which skips the ones gone.)
  cat /proc/[0-9]*/status 2>/dev/null | awk -v pm="$(head -n 1 "$work/pg/data/postmaster.pid")" '
    /^Name:/ { parent = "" }
    /^PPid:/ { parent = $2 }
    /^nonvoluntary_ctxt_switches:/ && parent == pm { total += $2 }
    END { print total + 0 }' || true
}
machine_ticks() {  # "idle total": the machine's idle and all CPU time so far, in ticks
  awk '/^cpu /{t = 0; for (i = 2; i <= NF; i++) t += $i; print $5 + $6, t}' /proc/stat
}
run_pgbench() {  # name port pid|- mode seconds [warm]: appends "name mode tps tx pooler-cpu pg-cpu pg-preemptions"
  local name=$1 port=$2 pid=$3 mode=$4 log="$work/pgbench-$1-$4.log" c0=0 c1=0 p0 p1 n0 n1 tps tx
  local i0 t0 i1 t1
  read -r i0 t0 < <(machine_ticks)
  [ "$pid" = - ] || c0=$(proc_cpu "$pid")
  p0=$(cluster_cpu "$work/pg")
  n0=$(cluster_preemptions)
  pgbench -h 127.0.0.1 -p "$port" -S -c "$CLIENTS" -j 2 -T "$5" -n -M "$mode" bench >"$log" 2>&1 ||
    { echo "pgbench through $name failed:" >&2; cat "$log" >&2; exit 1; }
  n1=$(cluster_preemptions)
  p1=$(cluster_cpu "$work/pg")
  [ "$pid" = - ] || c1=$(proc_cpu "$pid")
  read -r i1 t1 < <(machine_ticks)
  [ -z "${6:-}" ] || return 0
  tps=$(awk '/^tps = /{print $3}' "$log" | tail -n 1)
  tx=$(awk -F': ' '/^number of transactions actually processed/{split($2, a, "/"); print a[1]}' "$log")
  local cpu pg
  cpu=$(awk -v a="$c0" -v b="$c1" 'BEGIN {print b - a}')
  pg=$(awk -v a="$p0" -v b="$p1" 'BEGIN {print b - a}')
  echo "$name $mode $tps $tx $cpu $pg $((n1 - n0))" >>"$work/results"
  awk -v n="$name" -v m="$mode" -v tps="$tps" -v tx="$tx" -v c="$cpu" -v pg="$pg" \
      -v pre="$((n1 - n0))" -v pooled="$pid" -v idle="$(( (i1 - i0) * 100 / (t1 - t0 > 0 ? t1 - t0 : 1) ))" 'BEGIN {
    printf "  %-13s %-8s %9.0f tps", n, m, tps
    if (pooled != "-") printf "  pooler %.3f cpu s/1000 tx", c * 1000 / tx
    printf "  postgres %.3f cpu s/1000 tx, %.3f preemptions/tx; machine %d%% idle\n", pg * 1000 / tx, pre / tx, idle }'
}
targets=("direct $PGPORT -")
want pgflow && targets+=("pgflow $PGFLOW_PORT $PGFLOW_PID")
want pgflow-normal && targets+=("pgflow-normal $NORMAL_PORT $NORMAL_PID")
want pgbouncer && targets+=("pgbouncer $BOUNCER_PORT $BOUNCER_PID")
# Warm-up, not measured: the table into shared buffers, the pools filled.
for t in "${targets[@]}"; do run_pgbench $t simple 2 warm; done
echo "1. pgbench -S -c $CLIENTS -j 2 -T $BENCH_SECONDS, pool size $POOL_SIZE, transaction mode, $ROUNDS rounds"
# ROUNDS rounds, the order reversed every other round (A B C, C B A, ...): a drift of the
# machine over the run weighs on every pooler alike. The summary gives the mean.
for round in $(seq "$ROUNDS"); do
  order=("${targets[@]}")
  if (( round % 2 == 0 )); then
    order=()
    for (( i = ${#targets[@]} - 1; i >= 0; i-- )); do order+=("${targets[i]}"); done
  fi
  for mode in simple extended; do
    for t in "${order[@]}"; do run_pgbench $t "$mode" "$BENCH_SECONDS"; done
  done
done

# --- 2. idle clients -------------------------------------------------------------------------
cat >"$work/idle_clients.py" <<'PY'
# Opens N PostgreSQL client connections to HOST:PORT as user postgres, database bench (trust),
# each up to ReadyForQuery, and runs one query on each; writes READY_FILE once all are in, then
# holds them idle until SIGTERM, checks that all are still open, closes them.
import asyncio, resource, signal, struct, sys, time

host, port, n, ready_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
need = n + 64
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < need:
    if hard != resource.RLIM_INFINITY and hard < need:
        sys.exit(f"idle clients: {n} sockets need {need} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))

params = b"user\0postgres\0database\0bench\0application_name\0idle\0\0"
startup = struct.pack("!II", 8 + len(params), 196608) + params
query = b"Q" + struct.pack("!I", 4 + len(b"SELECT 1\0")) + b"SELECT 1\0"

async def until_ready(reader):
    while True:
        head = await asyncio.wait_for(reader.readexactly(5), 60)
        kind, length = head[:1], struct.unpack("!I", head[1:])[0]
        body = await reader.readexactly(length - 4)
        if kind == b"R":
            code = struct.unpack("!I", body[:4])[0]
            if code != 0:
                raise RuntimeError(f"the server asks for authentication {code}; trust expected")
        elif kind == b"E":
            fields = dict((f[:1], f[1:].decode(errors="replace")) for f in body.split(b"\0") if f)
            raise RuntimeError(f"server error: {fields.get(b'M', body)}")
        elif kind == b"Z":
            return

async def login(sem):
    async with sem:
        for attempt in range(10):
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 30)
                break
            except (OSError, asyncio.TimeoutError):
                if attempt == 9:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        writer.write(startup)
        await until_ready(reader)
        writer.write(query)
        await until_ready(reader)
        return reader, writer

async def main():
    sem = asyncio.Semaphore(100)
    start = time.monotonic()
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(login(sem) for _ in range(n)), return_exceptions=True), 240)
    except asyncio.TimeoutError:
        sys.exit(f"idle clients: {n} logins not done after 240 s")
    conns = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        sys.exit(f"idle clients: {len(errors)} of {n} logins failed; first: {errors[0]!r}")
    print(f"{n} clients logged in in {time.monotonic() - start:.1f}s", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with open(ready_file, "w") as f:
        f.write(f"{n}\n")
    await stop.wait()
    still = sum(1 for reader, _ in conns if not reader.at_eof())
    print(f"{still} of {n} still open when released", flush=True)
    for _, writer in conns:
        writer.close()
    if still != n:
        sys.exit(1)

asyncio.run(main())
PY
idle_test() {  # name port pid: appends "idle name rss-before-kb rss-after-kb"
  local name=$1 port=$2 pid=$3 before after log="$work/idle-$1.log"
  rm -f "$work/idle.ready"
  before=$(rss_kb "$pid")
  python3 "$work/idle_clients.py" 127.0.0.1 "$port" "$IDLE_CLIENTS" "$work/idle.ready" >"$log" 2>&1 &
  IDLE_PID=$!
  for _ in $(seq 3000); do  # at most 300 s to log them all in
    [ -s "$work/idle.ready" ] && break
    kill -0 "$IDLE_PID" 2>/dev/null || { wait "$IDLE_PID" || true; cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  [ -s "$work/idle.ready" ] || { echo "idle clients: not all logged in to $name after 300 s" >&2; cat "$log" >&2; exit 1; }
  sleep 3  # idle (pgflow parks a client idle for a second after its last transaction)
  after=$(rss_kb "$pid")
  kill -TERM "$IDLE_PID"
  wait "$IDLE_PID" || { cat "$log" >&2; exit 1; }
  IDLE_PID=
  echo "idle $name $before $after" >>"$work/results"
  echo "  $name: $(head -n 1 "$log"); VmRSS $before kB -> $after kB," \
    "$(awk -v a="$after" -v b="$before" -v n="$IDLE_CLIENTS" 'BEGIN {printf "%.0f", (a - b) * 1024 / n}') bytes per idle client"
  sleep 1  # the pooler closes them
}
echo "2. $IDLE_CLIENTS idle clients"
want pgflow && idle_test pgflow "$PGFLOW_PORT" "$PGFLOW_PID"
want pgbouncer && idle_test pgbouncer "$BOUNCER_PORT" "$BOUNCER_PID"

# --- summary ---------------------------------------------------------------------------------
python3 - "$work/results" "$BENCH_SECONDS" "$IDLE_CLIENTS" "$CLIENTS" "$ROUNDS" <<'PY'
import sys
runs, idle, each = {}, {}, {}
for line in open(sys.argv[1]):
    f = line.split()
    if f[0] == "idle":
        idle[f[1]] = (int(f[2]), int(f[3]))
    else:
        # Summed over the rounds, tps averaged.
        tps, tx, cpu, pg, pre, n = runs.get((f[0], f[1]), (0.0, 0, 0.0, 0.0, 0, 0))
        runs[f[0], f[1]] = (tps + float(f[2]), tx + int(f[3]), cpu + float(f[4]), pg + float(f[5]),
                            pre + int(f[6]), n + 1)
        each.setdefault((f[0], f[1]), []).append(float(f[2]))
runs = {k: (v[0] / v[5],) + v[1:5] for k, v in runs.items()}
seconds, n, clients, rounds = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
# Student's t, two-sided 95%, by degrees of freedom (index 1 on).
T95 = (None, 12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
       2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086)
def ratio(a, b):
    return f"{a / b:.3f}" if a is not None and b else "n/a"
print(f"summary (pgbench -S -c {clients} -j 2 -T {seconds}, mean of {rounds} rounds; pool size 20, transaction mode; {n:,} idle clients)")
names = ("direct", "pgflow", "pgflow-normal", "pgbouncer")
for mode in ("simple", "extended"):
    tps = {k: runs[k, mode][0] for k in names if (k, mode) in runs}
    cpu = {k: runs[k, mode][2] * 1000 / runs[k, mode][1] for k in names[1:] if (k, mode) in runs}
    pg = {k: runs[k, mode][3] * 1000 / runs[k, mode][1] for k in tps}
    pre = {k: runs[k, mode][4] / runs[k, mode][1] for k in tps}
    fmt = lambda d, k, spec: format(d[k], spec) if k in d else "n/a"
    print(f"pooler select-only {mode}: pgflow {fmt(tps, 'pgflow', ',.0f')} tps, "
          f"pgbouncer {fmt(tps, 'pgbouncer', ',.0f')} tps, ratio {ratio(tps.get('pgflow'), tps.get('pgbouncer'))} "
          f"(goal >= 1.0), direct {fmt(tps, 'direct', ',.0f')} tps; "
          f"pooler cpu s/1000 tx: pgflow {fmt(cpu, 'pgflow', '.3f')}, pgbouncer {fmt(cpu, 'pgbouncer', '.3f')}; "
          f"postgres cpu s/1000 tx: pgflow {fmt(pg, 'pgflow', '.3f')}, pgbouncer {fmt(pg, 'pgbouncer', '.3f')}, "
          f"direct {fmt(pg, 'direct', '.3f')}")
    if ("pgflow", mode) in each and ("pgbouncer", mode) in each:
        # The spread: how far one round's ratio may stray from the mean on this machine, and
        # the 95% confidence interval of the mean of the rounds' ratios (Student's t).
        ratios = [a / b for a, b in zip(each["pgflow", mode], each["pgbouncer", mode])]
        line = "  pgflow/pgbouncer by round: " + " ".join(f"{r:.3f}" for r in ratios)
        if len(ratios) >= 2:
            k = len(ratios)
            mean = sum(ratios) / k
            sd = (sum((r - mean) ** 2 for r in ratios) / (k - 1)) ** 0.5
            t = T95[k - 1] if k - 1 < len(T95) else 1.96
            half = t * sd / k ** 0.5
            line += (f"; mean {mean:.3f}, standard deviation {sd:.3f}, "
                     f"95% interval {mean - half:.3f} to {mean + half:.3f}")
        print(line)
    if "pgflow-normal" in tps:
        print(f"  pgflow with scheduling: normal: {fmt(tps, 'pgflow-normal', ',.0f')} tps, ratio to pgbouncer "
              f"{ratio(tps.get('pgflow-normal'), tps.get('pgbouncer'))}, pooler cpu s/1000 tx "
              f"{fmt(cpu, 'pgflow-normal', '.3f')}; backend preemptions per tx: pgflow {fmt(pre, 'pgflow', '.3f')}, "
              f"pgflow-normal {fmt(pre, 'pgflow-normal', '.3f')}, pgbouncer {fmt(pre, 'pgbouncer', '.3f')}")
growth = {k: (a - b) * 1024 / n for k, (b, a) in idle.items()}
print(f"pooler idle clients: pgflow {format(growth['pgflow'], ',.0f') if 'pgflow' in growth else 'n/a'} bytes/client, "
      f"pgbouncer {format(growth['pgbouncer'], ',.0f') if 'pgbouncer' in growth else 'n/a'} bytes/client, "
      f"ratio {ratio(growth.get('pgflow'), growth.get('pgbouncer'))} (lower is better)")
PY
